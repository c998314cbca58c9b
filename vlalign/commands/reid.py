"""`vlalign reid train | eval | search`: visible-infrared re-identification (front-end only, see vlalign/reid.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DATASETS = ("sysu", "regdb", "llcm")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("reid", help="visible-infrared person re-identification: train, eval, search")
    reid = parser.add_subparsers(dest="reid_command", required=True, metavar="COMMAND")

    p = reid.add_parser("train", help="train a re-id model's stages in order (OUT/stage1, OUT/stage2, ...)")
    p.add_argument("model", help="builder name: clip4vireid_lite or clip4vireid_vitb16 (needs --set clip_path=...)")
    p.add_argument("--data", required=True, help="data set root in its official layout")
    p.add_argument("--dataset", default="sysu", choices=DATASETS)
    p.add_argument("--regdb-trial", type=int, default=1, help="RegDB split 1..10 to train and test on")
    p.add_argument("--out", required=True, help="run folder; the trained model goes to OUT/model")
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3], help="stages to run, in order (1 TSG, "
                   "2 IFE, 3 HSA)")
    p.add_argument("--iters", type=int, nargs=3, default=None, metavar=("TSG", "IFE", "HSA"),
                   help="iterations per stage (default: the model's recipe)")
    p.add_argument("--lr", type=float, nargs=3, default=None, metavar=("TSG", "IFE", "HSA"))
    p.add_argument("--batch-size", type=int, nargs=3, default=None, metavar=("TSG", "IFE", "HSA"),
                   help="global batches; IFE/HSA batches are identities x --set num_instances=K")
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=0, help="evaluate the first protocol every N iterations")
    p.add_argument("--eval-trials", type=int, default=1, help="trials of the periodic evaluation")
    p.add_argument("--trials", type=int, default=10, help="trials of the final evaluation")
    p.add_argument("--no-final-eval", action="store_true")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="skip finished stages, continue the interrupted one")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model config overrides, e.g. --set clip_path=/models/ViT-B-16.pt ife_weight=0.5")
    p.set_defaults(func=_train)

    p = reid.add_parser("eval", help="Rank-1/5/10/20, mAP, mINP of a model folder with the official protocols")
    p.add_argument("--weights", required=True, help="model folder (config.json + model.safetensors)")
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", default="sysu", choices=DATASETS)
    p.add_argument("--mode", nargs="+", default=["all"], choices=["all", "indoor"], help="SYSU search modes")
    p.add_argument("--shots", type=int, nargs="+", default=[1], help="SYSU gallery images per (id, camera)")
    p.add_argument("--sampling", default="seeded", choices=["seeded", "official"],
                   help="SYSU gallery lineage: seeded per trial (AGW) or exp/rand_perm_cam.mat (official)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--regdb-trial", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", default=None, help="write the metrics here")
    p.set_defaults(func=_eval)

    p = reid.add_parser("search", help="rank a folder of images by similarity to a query image")
    p.add_argument("--weights", required=True)
    p.add_argument("--query", required=True, help="query image (a person crop)")
    p.add_argument("--gallery", required=True, help="folder of images, searched recursively")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--sheet", default=None, help="write a contact sheet (query + ranked images) here")
    p.set_defaults(func=_search)


def _setup():
    from vlalign.commands.models import cpu_setup

    cpu_setup()


def _train(args) -> int:
    _setup()
    import numpy as np

    from vlalign import reid
    from vlalign.commands.models import _overrides
    from vlalign.models.pretrained import build_model, save_pretrained

    overrides = _overrides(args.set)
    if "num_ids" not in overrides:  # the classifiers and prompts are sized by the training identities
        visible, infrared = reid.training_images(args.dataset, args.data, args.regdb_trial)
        overrides["num_ids"] = len(np.union1d(visible.pids, infrared.pids))
    import torch

    torch.manual_seed(args.seed)  # the new layers' initial weights too: a rerun or a resumed run builds the same
    model = build_model(args.model, **overrides)
    try:
        summary = reid.train_reid(
            model, args.data, args.out, dataset=args.dataset, regdb_trial=args.regdb_trial,
            stages=tuple(args.stages), iters=args.iters, lrs=args.lr, batch_sizes=args.batch_size,
            resume=args.resume, seed=args.seed, device=args.device, save_every=args.save_every,
            eval_every=args.eval_every, eval_trials=args.eval_trials, num_workers=args.workers)
    except FileExistsError as e:  # cli.main reports FileNotFoundError/ValueError only: same treatment here
        print(f"vlalign reid train: error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    model_dir = Path(args.out) / "model"
    save_pretrained(model.eval(), model_dir)
    print(f"model written to {model_dir}")
    if not args.no_final_eval:
        results = reid.evaluate_reid(model, args.dataset, args.data, trials=args.trials, regdb_trial=args.regdb_trial)
        print(reid.metric_table(results))
        from vlalign.hub import update_model_card

        update_model_card(model_dir, metrics=results)
        from vlalign.refseg import write_json

        write_json(Path(args.out) / "results.json", {"results": results, "train": summary})
    return 0


def _eval(args) -> int:
    _setup()
    from vlalign import reid
    from vlalign.models.pretrained import from_pretrained

    model = from_pretrained(args.weights)
    results = reid.evaluate_reid(model, args.dataset, args.data, trials=args.trials, modes=tuple(args.mode),
                                 shots=tuple(args.shots), sampling=args.sampling, regdb_trial=args.regdb_trial,
                                 batch_size=args.batch_size)
    print(reid.metric_table(results))
    if args.json:
        from vlalign.refseg import write_json

        write_json(args.json, results)
    return 0


def _search(args) -> int:
    _setup()
    from vlalign import reid
    from vlalign.models.pretrained import from_pretrained

    if not Path(args.query).is_file():
        raise FileNotFoundError(f"query image not found: {args.query}")
    model = from_pretrained(args.weights)
    ranked = reid.search(model, args.query, reid.gallery_images(args.gallery), topk=args.topk)
    for rank, (path, score) in enumerate(ranked, start=1):
        print(f"{rank:>4}  {score:.4f}  {path}")
    if args.sheet:
        sheet = Path(args.sheet)
        sheet.parent.mkdir(parents=True, exist_ok=True)
        reid.contact_sheet(args.query, ranked).save(sheet)
        print(f"contact sheet: {sheet}")
    return 0
