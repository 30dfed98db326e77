"""``speech-peft restore IN OUT --checkpoint RESTORER_EXPORT``: batch restoration (resumable, DDP)."""
from __future__ import annotations

import argparse
import json

from ..errors import UserError
from ..jobs.devices import DEVICES
from ..jobs.restore import BASELINES, RestorerChoice, restore, shipped_restorer
from ..vocoders.bridge import SYNTHESES
from ..vocoders.student import SHIPPED as SHIPPED_STUDENT


def add_parser(sub) -> None:
    rs = sub.add_parser("restore", help="restore degraded speech with a trained cleaner + vocoder")
    rs.add_argument("inputs", help="a folder of audio or a .jsonl manifest")
    rs.add_argument("out", help="output folder (same relative names; never inside the input)")
    rs.add_argument("--checkpoint", help="a restorer export (the bridge or vocoder training's export/); "
                                         "default: the restorer shipped with the package")
    rs.add_argument("--baseline", choices=list(BASELINES),
                    help="instead of a trained restorer, a denoiser to beat: spectral gating (noisereduce) or RNNoise "
                         "(pretrained; with --attenuation-limit-db it only lowers the input by that much)")
    rs.add_argument("--device", choices=DEVICES, default="cpu", help="auto: a GPU when there is one")
    rs.add_argument("--devices", type=int, default=1, help="processes on this node (DDP when > 1)")
    rs.add_argument("--num-nodes", type=int, default=1)
    rs.add_argument("--skip-bad", action="store_true",
                    help="skip unreadable inputs, listing them with the reason in OUT/rejects.tsv")
    rs.add_argument("--ledger", action="store_true", help="log which process restored which input")
    rs.add_argument("--copy-synthesis", action="store_true",
                    help="cleaner off: vocode the encoder's own features (the vocoder's ceiling on clean input)")
    rs.add_argument("--student", metavar="DIR", nargs="?", const=str(SHIPPED_STUDENT),
                    help="a distilled student of HiFi-GAN V1 speaks instead (about 20x faster on a CPU, lower "
                         "quality); without DIR, the one shipped with the package")
    rs.add_argument("--synthesis", choices=SYNTHESES,
                    help="how the predicted log-mel becomes audio: vocoder (HiFi-GAN speaks it) or input_gain (it "
                         "lowers bands of the input's own spectrum, nothing resynthesised); default: the export's")
    rs.add_argument("--attenuation-limit-db", type=float, metavar="DB",
                    help="input_gain synthesis (or --baseline rnnoise): the most any band is lowered (smaller: more "
                         "noise left in, less speech taken out); default: the export's")
    rs.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.baseline and args.checkpoint:
        raise UserError(f"--baseline {args.baseline} and --checkpoint name two restorers: give one")
    checkpoint = args.baseline or args.checkpoint or str(shipped_restorer())
    choice = RestorerChoice(checkpoint, args.student, args.copy_synthesis, args.synthesis, args.attenuation_limit_db)
    options = {"ledger": args.ledger, "device": args.device, "skip_bad": args.skip_bad}
    if args.devices < 1 or args.num_nodes < 1:
        raise UserError(f"--devices {args.devices} --num-nodes {args.num_nodes}: both must be at least 1")
    if args.devices * args.num_nodes > 1:
        from ..tasks.parallel_restore import restore_in_processes  # Lightning starts and joins the processes

        done = restore_in_processes(args.inputs, args.out, choice, args.devices, args.num_nodes, **options)
    else:
        done = restore(args.inputs, args.out, choice, **options)
    print(json.dumps(done))
    return 0
