"""What a referring segmenter's wrong masks are, per expression form, on the synthetic benchmark.

Each val sentence's prediction is put in one class by comparing it with every annotated object of its image
(coverage = share of an object's pixels inside the predicted mask):
- correct: IoU with the target > 0.5;
- target + others: the target and at least one other object are both more than half covered (the model
  found the right kind of object but did not single one out);
- wrong object: another object is more than half covered, the target is not (it singled out the wrong one);
- empty / partial: anything else.

A second table splits the same sentences by the target's size (visible area below SMALL_AREA x min(H, W)^2 =
"small", the generator's small class; heavy occlusion can move a big object there): mIoU, the share correct,
and the mean IoU of the correct ones (how good the mask is when the object is right).

    .venv/bin/python benchmarks/failure_modes_refseg.py --weights runs/exp/frz640/model [--max-refs 200]
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from vlalign.data.refer import ReferDataset
from vlalign.metrics.refseg import iou
from vlalign.predictor import ReferringSegmenter
from vlalign.synth import load_synth_info

CLASSES = ("correct", "target + others", "wrong object", "empty / partial")
SMALL_AREA = 0.035  # between the synthetic size classes' areas (~0.013-0.021 small, ~0.05-0.07 big)


def classify(pred, target, others) -> str:
    """pred, target, others[i]: bool HxW arrays."""
    inter = (pred & target).sum()
    if iou(inter, (pred | target).sum()) > 0.5:
        return "correct"
    covered = sum((pred & o).sum() > 0.5 * o.sum() for o in others if o.any())
    if covered:
        return "target + others" if inter > 0.5 * target.sum() else "wrong object"
    return "empty / partial"


def size_class(target) -> str:
    """"small" or "big" by the target's visible area relative to min(H, W)^2."""
    return "small" if target.sum() < SMALL_AREA * min(target.shape) ** 2 else "big"


def failure_table(weights, data, split="val", max_refs=200) -> tuple[dict[str, Counter], dict[str, list]]:
    """Counts of each class per form, and (IoU, class) of every sentence per target size."""
    info = load_synth_info(data)  # checked first: it costs nothing, the model and the refs do
    if info is None:
        raise SystemExit(f"{data}: no synth_info.json (expression forms exist only for `vlalign synth refcoco`)")
    dataset = ReferDataset(data, split, mode="eval")
    segmenter = ReferringSegmenter.from_pretrained(weights)
    counts: dict[str, Counter] = defaultdict(Counter)
    sizes: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for ref in dataset.refs[:max_refs]:
        segmenter.set_image(dataset.image_info(ref["image_id"])["path"])
        preds = segmenter.predict([s["sent"] for s in ref["sentences"]])
        target = dataset.ann_mask(ref["ann_id"]).astype(bool)
        others = [dataset.ann_mask(a).astype(bool) for a in dataset.image_annotations(ref["image_id"])
                  if a != ref["ann_id"]]
        for sentence, pred in zip(ref["sentences"], preds):
            label = classify(pred, target, others)
            counts[info[str(sentence["sent_id"])]["form"]][label] += 1
            sizes[size_class(target)].append((iou((pred & target).sum(), (pred | target).sum()), label))
    return counts, sizes


def markdown(counts: dict[str, Counter]) -> str:
    rows = ["| form | n | " + " | ".join(CLASSES) + " |", "|---|---:|" + "---:|" * len(CLASSES)]
    for form in sorted(counts):
        n = sum(counts[form].values())
        rows.append(f"| {form} | {n} | " + " | ".join(f"{counts[form][c] / n:.2f}" for c in CLASSES) + " |")
    return "\n".join(rows)


def size_markdown(sizes: dict[str, list[tuple[float, str]]]) -> str:
    rows = ["| target | n | mIoU | correct | IoU when correct |", "|---|---:|---:|---:|---:|"]
    for name in ("small", "big"):
        got = sizes.get(name, [])
        if not got:
            continue
        right = [v for v, label in got if label == "correct"]
        hit = f"{sum(right) / len(right):.3f}" if right else "-"
        rows.append(f"| {name} | {len(got)} | {sum(v for v, _ in got) / len(got):.3f} | "
                    f"{len(right) / len(got):.2f} | {hit} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a save_pretrained folder")
    parser.add_argument("--data", default="runs/bench/data")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-refs", type=int, default=200)
    args = parser.parse_args()
    if args.max_refs < 1:
        parser.error(f"--max-refs must be at least 1, got {args.max_refs}")
    counts, sizes = failure_table(args.weights, args.data, args.split, args.max_refs)
    print(markdown(counts), size_markdown(sizes), sep="\n\n")


if __name__ == "__main__":
    main()
