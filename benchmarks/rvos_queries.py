"""Does a query-decoder video model fail at segmenting objects or at choosing among them?

For a model trained with `query_decoder=true`, one clip per valid expression (centred on its middle annotated
frame, at the model's input size): the IoU with the ground truth of the query the model picks (best score)
and of the best query in hindsight (the oracle), and how often the pick is the oracle's query. A high oracle
with a low pick means the masks are there and the score chooses wrong; a low oracle means no query segments
the object; a pick that is always the same query means the score says nothing and that query hedges.
Grouped by synth_info.json: "motion-only" (the target has a twin of identical appearance) and the
rest. A diagnostic at the network's resolution, not the official J&F (`vlalign rvos eval`).

    .venv/bin/python benchmarks/rvos_queries.py --weights runs/bench/learning_rvos/queries/model
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from vlalign.data.clips import ReferringClips
from vlalign.data.ytvos import RefYTVOS
from vlalign.models.pretrained import from_pretrained
from vlalign.rvos import load_synth_info


def middle_items(clips: ReferringClips) -> list[int]:
    """One item per expression of a frames-mode dataset: the one centred on its middle annotated frame."""
    per_expression: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i in range(len(clips)):
        exp, _, _ = clips.clip(i)
        per_expression[(exp.video, exp.exp_id)].append(i)
    return [items[len(items) // 2] for items in per_expression.values()]


def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred (N, H, W) bool, target (H, W) bool -> (N,) IoU, 1 where both are empty (the J convention)."""
    inter = (pred & target).flatten(1).sum(1).double()
    union = (pred | target).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@torch.no_grad()
def score_queries(model, reader, max_expressions: int | None = None) -> list[dict]:
    """Per expression: video, exp_id, picked IoU, oracle IoU, whether the pick is the oracle's query."""
    cfg = model.config
    if model.queries is None:
        raise SystemExit("the model has no query decoder (trained without query_decoder=true)")
    clips = ReferringClips(reader, cfg.num_frames, cfg.input_size, mode="frames", frame_stride=cfg.frame_stride)
    rows = []
    for i in middle_items(clips)[:max_expressions]:
        item = clips[i]
        tok = model.tokenize([item["text"]])
        out = model(item["frames"][None], tok["tokens"], tok["token_mask"])
        k = item["target_index"]
        masks = F.interpolate(out["query_logits"][0, :, k][None], size=item["masks"].shape[-2:], mode="bilinear",
                              align_corners=False)[0] > 0  # (N, S, S)
        ious = iou(masks, item["masks"][k] > 0)
        pick = int(out["scores"][0].argmax())
        rows.append({"video": item["video"], "exp_id": item["exp_id"], "picked": float(ious[pick]),
                     "oracle": float(ious.max()), "hit": pick == int(ious.argmax()), "pick": pick})
    return rows


def summary(rows: list[dict], info: dict | None) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups["all"].append(row)
        meta = (info or {}).get(f"valid/{row['video']}/{row['exp_id']}")
        if meta is not None:
            groups["motion-only" if meta.get("motion_only") else "other"].append(row)
    lines = ["| expressions | n | picked IoU | oracle IoU | pick = oracle | commonest pick |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, group in groups.items():
        # a decoder whose score always names the same query has collapsed: that query hedges between objects
        picks = np.bincount([r["pick"] for r in group])
        lines.append(f"| {name} | {len(group)} | {np.mean([r['picked'] for r in group]):.3f} | "
                     f"{np.mean([r['oracle'] for r in group]):.3f} | {np.mean([r['hit'] for r in group]):.2f} | "
                     f"query {picks.argmax()} ({picks.max() / len(group):.0%}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="save_pretrained folder of a query-decoder model")
    p.add_argument("--data", default="runs/bench/ytvos", help="Ref-YouTube-VOS-layout folder with valid masks")
    p.add_argument("--max-expressions", type=int, default=None)
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    model = from_pretrained(args.weights).eval()
    reader = RefYTVOS(args.data, "valid")
    if not reader.has_annotations:
        raise SystemExit(f"{args.data}: the valid split has no Annotations/ to score against")
    print(summary(score_queries(model, reader, args.max_expressions), load_synth_info(args.data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
