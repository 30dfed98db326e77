"""Adapter overhead on a Whisper tiny.en-sized encoder (d_model 384, 4 layers, 30 s input, batch 4; ``--size base``:
d_model 512, 6 layers).

For each method: trainable parameters, training-step time and peak extra memory relative to full
fine-tuning; our LoRA against Hugging Face PEFT's LoRA on the same modules (steps alternated in one
process, median after warm-up); merged-LoRA inference time against the bare encoder.
Memory is measured two ways: the activations autograd saves for the backward pass (exact: the
bytes of every distinct tensor packed during one forward), and the growth of the process's peak RSS
during the steps in a fresh process per method (what the machine saw, but it carries allocator noise
of a few per cent on the CPU, where there is no allocator counter).

    .venv/bin/python benches/adapter_overhead.py [--steps 5] [--threads 2] [--methods lora coda_4x ...] [--size base]

CoDA rows: encoder inference with 1 token in 2, 4 and 8 routed through each block after the first against the
same adapter with every token through every block (its dense path).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

BATCH, FRAMES = 4, 3000
SIZES = {"tiny": {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536},
         "base": {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048}}
SIZE = "tiny"  # set by --size (the child processes get it too)


def make_encoder():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    config = WhisperConfig(**SIZES[SIZE], num_mel_bins=80, max_source_positions=1500)
    return WhisperEncoder(config).eval()


METHODS = {
    "full": None,
    "linear_probe": {"method": "linear_probe"},
    "bitfit": {"method": "bitfit"},
    "lora": {"method": "lora", "r": 8, "alpha": 16, "target_roles": ["attn.q", "attn.v"]},
    "pissa": {"method": "lora", "r": 8, "alpha": 16, "init": "pissa", "target_roles": ["attn.q", "attn.v"]},
    "series_pfeiffer": {"method": "series", "placement": "pfeiffer", "reduction_factor": 16},
    "series_houlsby": {"method": "series", "placement": "houlsby", "reduction_factor": 16},
    "parallel": {"method": "parallel", "reduction_factor": 16},
    "conformer_adapter": {"method": "series", "kind": "conformer", "reduction_factor": 16, "layer_norm": True},
    "adapter_bias": {"method": "adapter_bias"},
    "prompt_deep": {"method": "prompt", "num_tokens": 10, "depth": "deep"},
    "prefix": {"method": "prefix", "num_tokens": 10},
    "hydra": {"method": "hydra", "r": 4, "alpha": 8, "target_roles": ["attn.q", "attn.v"]},
    "hyper": {"method": "hyper", "bottleneck_dim": 16, "hyper_dim": 4},
    "mhr": {"method": "poly", "r": 4, "alpha": 8, "skills": 4, "heads": 4, "target_roles": ["attn.q", "attn.v"]},
    "hd_pissa": {"method": "hd_pissa", "r": 8, "alpha": 8, "target_roles": ["attn.q", "attn.v"]},
    "lte": {"method": "lte", "r": 8, "alpha": 16, "target_roles": ["attn.q", "attn.v"]},
}
CODA_REDUCTIONS = (2, 4, 8)
CONF = Path(__file__).resolve().parents[1] / "conf" / "adapter"


def coda_config(reduction: int) -> dict:
    """The shipped CoDA config with 1 token in ``reduction`` routed."""
    import yaml

    return {**yaml.safe_load((CONF / "coda_4x.yaml").read_text()), "reduction": reduction}


METHODS["coda_4x"] = coda_config(4)


def prepare(method: str):
    from speech_peft.adapters import add_adapter, config_from_dict

    model = make_encoder()
    if METHODS[method] is None:
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        add_adapter(model, config_from_dict(dict(METHODS[method])))
    return model


def peft_lora():
    import peft

    return peft.get_peft_model(make_encoder(), peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))


class Stepper:
    """One training step: forward, MSE to a fixed target, backward, AdamW."""

    def __init__(self, model):
        self.model = model
        self.x = torch.randn(BATCH, 80, FRAMES, generator=torch.Generator().manual_seed(1))
        self.target = torch.randn(BATCH, 1500, SIZES[SIZE]["d_model"], generator=torch.Generator().manual_seed(2))
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=1e-4) if params else None

    def __call__(self) -> float:
        start = time.perf_counter()
        out = self.model(self.x).last_hidden_state
        loss = torch.nn.functional.mse_loss(out, self.target)
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - start


def saved_for_backward(model) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass of one training forward."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(BATCH, 80, FRAMES)).last_hidden_state.sum()
    return sum(seen.values())


def child(method: str, steps: int) -> None:
    """Runs in a fresh process: peak RSS growth, saved activations and step times of one method."""
    model = peft_lora() if method == "peft_lora" else prepare(method)
    stepper = Stepper(model)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = [stepper() for _ in range(steps + 2)][2:]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    saved = saved_for_backward(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(json.dumps({"method": method, "peak_kib": after - before, "median_s": statistics.median(times),
                      "saved_bytes": saved,
                      "trainable": trainable, "total": total}))


def alternate(a, b, steps: int) -> tuple[float, float]:
    """Median step times of two steppers run alternately in the same process."""
    ta, tb = [], []
    for i in range(steps + 2):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        r1, r2 = first(), second()
        if i >= 2:
            (ta if first is a else tb).append(r1)
            (tb if first is a else ta).append(r2)
    return statistics.median(ta), statistics.median(tb)


def merged_inference(steps: int) -> tuple[float, float]:
    from speech_peft.adapters import merge_adapter

    bare, merged = make_encoder(), prepare("lora")
    with torch.no_grad():
        for n, p in merged.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    merge_adapter(merged, "default")
    x = torch.randn(BATCH, 80, FRAMES)
    return alternate(inference_timer(bare, x), inference_timer(merged, x), steps)


def inference_timer(model, x):
    def run() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model(x)
        return time.perf_counter() - start
    return run


def coda_inference(steps: int, reduction: int) -> tuple[float, float]:
    """Encoder inference with CoDA sending 1 token in ``reduction`` through each block, against the same
    adapter with every token through every block (the dense path), alternated."""
    from speech_peft.adapters import adapter_modules, add_adapter, config_from_dict

    dense, routed = make_encoder(), make_encoder()
    for model, r in ((dense, 1), (routed, reduction)):
        add_adapter(model, config_from_dict(coda_config(r)))
    for path, module in adapter_modules(routed, "default").items():
        adapter_modules(dense, "default")[path].load_state_dict(module.state_dict())
    x = torch.randn(BATCH, 80, FRAMES)
    return alternate(inference_timer(dense, x), inference_timer(routed, x), steps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child")
    parser.add_argument("--methods", nargs="+", default=[*METHODS, "peft_lora"],
                        help="rows to measure (full is always measured: the ratios are to it)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="a Whisper tiny.en- or base-sized encoder")
    args = parser.parse_args()
    global SIZE
    SIZE = args.size
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.steps)
        return

    rows = {}
    for method in dict.fromkeys(["full", *args.methods]):
        out = subprocess.run([sys.executable, __file__, "--child", method, "--steps", str(args.steps),
                              "--threads", str(args.threads), "--size", args.size], capture_output=True, text=True,
                             check=True)
        rows[method] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"measured {method}", file=sys.stderr)
    full = rows["full"]
    print(f"Whisper {args.size}-sized encoder, batch {BATCH} x 30 s, {args.threads} threads, median of {args.steps} "
          f"steps after 2 warm-up steps\n")
    print("| method | trainable params | trainable % | step time vs full FT | saved activations vs full FT | "
          "peak RSS growth vs full FT |")
    print("|---|---|---|---|---|---|")
    for method, r in rows.items():
        print(f"| {method} | {r['trainable']:,} | {100 * r['trainable'] / r['total']:.3f} | "
              f"{r['median_s'] / full['median_s']:.2f}x | {r['saved_bytes'] / max(full['saved_bytes'], 1):.2f}x | "
              f"{r['peak_kib'] / max(full['peak_kib'], 1):.2f}x |")

    print("\nCoDA inference against the same adapter with every token through every block, alternated:")
    for reduction in CODA_REDUCTIONS:
        dense, routed = coda_inference(args.steps, reduction)
        print(f"- 1 token in {reduction}: {routed:.3f} s vs {dense:.3f} s = {dense / routed:.2f}x faster")
    if "lora" not in rows or "peft_lora" not in rows:
        return
    ours, theirs = alternate(Stepper(prepare("lora")), Stepper(peft_lora()), args.steps)
    memory_ratio = rows["lora"]["peak_kib"] / max(rows["peft_lora"]["peak_kib"], 1)
    saved_ratio = rows["lora"]["saved_bytes"] / max(rows["peft_lora"]["saved_bytes"], 1)
    bare, merged = merged_inference(args.steps)
    print(f"\nLoRA (q, v; r=8) step, ours vs PEFT, alternated: {ours:.3f} s vs {theirs:.3f} s = "
          f"{ours / theirs:.3f}x time; saved activations {saved_ratio:.3f}x "
          f"({rows['lora']['saved_bytes'] / 2**20:.1f} MiB vs {rows['peft_lora']['saved_bytes'] / 2**20:.1f} MiB); "
          f"peak RSS growth {memory_ratio:.3f}x")
    print(f"Merged LoRA inference vs bare encoder, alternated: {merged:.3f} s vs {bare:.3f} s = {merged / bare:.3f}x")


if __name__ == "__main__":
    main()
