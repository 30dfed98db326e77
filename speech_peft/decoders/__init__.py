"""Text decoders that sit on a frozen speech encoder through adapters."""
from .masked_diffusion import (DiffusionDecoderConfig, MaskedDiffusionDecoder, canvas_lengths, diffusion_loss,
                               from_whisper, insert_gaps, load_decoder_weights, mask_tokens, pack_transcripts, sample_ratio,
                               text_tokens, within)
from .parallel_decode import Candidates, DecodeOptions, choose, diffusion_decode, rover, select_mbr, word_alignment

__all__ = ["DiffusionDecoderConfig", "MaskedDiffusionDecoder", "canvas_lengths", "within", "diffusion_loss",
           "from_whisper", "insert_gaps", "load_decoder_weights", "mask_tokens", "pack_transcripts", "sample_ratio", "text_tokens",
           "Candidates", "DecodeOptions", "choose", "diffusion_decode", "rover", "select_mbr", "word_alignment"]
