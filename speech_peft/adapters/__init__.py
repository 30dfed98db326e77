"""The adapter core: one injection mechanism, a registry of methods, safe save/load.

    report = add_adapter(encoder, LoRAConfig(r=8, target_roles=["attn.q", "attn.v"], layers="0-5"))
    set_active_adapters(encoder, ["default"])      # or [] for the bare base model
    save_adapter(encoder, "exp/lora", base_model_name="whisper-tiny.en")
"""
from . import (adapter_bias, bitfit, bottleneck, coda, cross_attention, hydra_adapter, hyper, lora, moa,  # noqa: F401
               mosa, poly, prompt, rank_parallel, sparse)  # (register methods)
from .adapter_bias import AdapterBiasConfig
from .bitfit import BitFitConfig, LinearProbeConfig
from .bottleneck import ParallelAdapterConfig, SeriesAdapterConfig
from .coda import CoDAConfig
from .config import AdapterConfig
from .hydra_adapter import HydraConfig
from .hyper import HyperAdapterConfig, materialise_hyper, set_hyper_task
from .cross_attention import CrossAttentionConfig, adapter_memory
from .injection import (AdapterBudgetError, AdapterMergeError, AdapterReport, active_adapters, attach_adapter,
                        adapter_modules, adapter_parameters, add_adapter, count_parameters, finalize_adapter,
                        merge_adapter,
                        records, remove_adapter, set_active_adapters, set_trainable_adapters, unmerge_adapter)
from .io import AdapterMismatchError, load_adapter, read_manifest, save_adapter
from .layout import BlockLayout, Sublayer, register_layout
from .site import AdapterSite, base_state_dict, sites, unwrap
from .lora import LoRAConfig
from .moa import MoAConfig
from .mosa import MoSAConfig, merge_mosa
from .peft_interop import export_peft_lora, import_peft_lora
from .poly import PolyConfig, adapt_routing, average_routing, resolve_routing
from .prompt import PrefixTuningConfig, PromptTuningConfig
from .rank_parallel import HDPiSSAConfig, LTEConfig, assign_ranks, merge_rank_updates
from .registry import FULL_FINETUNE, METHODS, config_from_dict, get_method, register_method, shared_module
from .sparse import SparseAdapterConfig, snip_prune
from .targeting import AdapterTargetError, Target, find_blocks, resolve_targets

__all__ = [name for name in dir() if not name.startswith("_")]
