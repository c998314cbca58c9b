"""VideoSegmenter: referring segmentation of whole videos of any length with a clip model (sliding window).

The model stays tensor-in / tensor-out (clips of T frames); this class streams frames through it:

- every frame is decoded and resized once (`ResizeSquare`, the training protocol) and shared by every
  expression: the expressions run as one batch over the same window of frames;
- windows of T frames start every `stride` frames and the last one ends on the last frame, as
  `vlalign.data.clips.sliding_windows`; each frame takes the prediction of the window in which it is most
  central (`assign_frames`: ties go to the earlier window), so with stride < T every frame but the first and
  last few sees context on both sides;
- a model trained on clips whose frames are `dilation` apart (its config's `frame_stride`) sees the same
  spacing here: the video is split into `dilation` interleaved sub-videos (frames k, k + d, k + 2d, ...), each
  segmented with the windows above, so every frame is still predicted exactly once;
- memory does not grow with the video: at most T resized frames per sub-video and the pending predictions of
  the last (T + stride) x dilation frames are held; a frame is emitted as soon as no later window can cover
  it more centrally (once frame i + T x dilation has been read, or at the end of the stream).

`predict_video(path, expressions, out)` adds OpenCV decoding and an overlay video (one colour per expression).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlalign.data.clips import repeat_indices
from vlalign.data.transforms import ResizeSquare
from vlalign.predictor import as_pil
from vlalign.visualize import PALETTE, overlay_mask

__all__ = ["VideoSegmenter", "predict_video"]


class VideoSegmenter:
    """Segment what sentences refer to in every frame of a video.

    >>> seg = VideoSegmenter.from_pretrained("runs/rvos/model")
    >>> for index, frame, masks in seg.stream(frames, ["the square moving to the left"]):
    ...     ...  # masks: one bool HxW array per expression, at the frame's own size

    window: frames per clip (default: the model's `num_frames`); stride: frames (of each sub-video, see
    dilation) between window starts, 1..window (default: ceil(window / 2)); dilation: video frames between the
    frames of a clip (default: the model's `frame_stride`, the spacing it was trained with); batch_size:
    expressions per forward pass.
    """

    def __init__(self, model: torch.nn.Module, *, window: int | None = None, stride: int | None = None,
                 dilation: int | None = None, device=None, batch_size: int = 8):
        self.model = model.eval()
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model.to(self.device)
        self.window = int(window or model.config.num_frames)
        self.stride = int(stride or (self.window + 1) // 2)
        if not 1 <= self.stride <= self.window:
            raise ValueError(f"stride must be in 1..window ({self.window}) so that no frame is skipped, "
                             f"got {self.stride}")
        self.dilation = int(dilation or getattr(model.config, "frame_stride", 1))
        if self.dilation < 1:
            raise ValueError(f"dilation must be >= 1 (frames between a clip's frames), got {self.dilation}")
        self.transform = ResizeSquare(model.config.input_size)
        self.batch_size = batch_size
        self.max_held = 0  # most frames held at once by the last `stream` (resized + pending): memory check

    @classmethod
    def from_pretrained(cls, path: str | Path, device=None, **kwargs) -> VideoSegmenter:
        from vlalign.models.pretrained import from_pretrained

        return cls(from_pretrained(path, map_location=device or "cpu"), device=device, **kwargs)

    @torch.inference_mode()
    def _run(self, clip: list[torch.Tensor], tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """T resized frames (3, S, S) + E tokenized expressions -> logits (E, T, S, S) on the CPU."""
        frames = torch.stack(clip).to(self.device)[None]  # (1, T, 3, S, S)
        outs = []
        for start in range(0, tokens["tokens"].shape[0], self.batch_size):
            tok = tokens["tokens"][start : start + self.batch_size].to(self.device)
            mask = tokens["token_mask"][start : start + self.batch_size].to(self.device)
            out = self.model(frames.expand(tok.shape[0], -1, -1, -1, -1), tok, mask)["logits"]
            outs.append(out.float().cpu())
        return torch.cat(outs)

    def stream_logits(self, frames: Iterable[Any],
                      expressions: list[str]) -> Iterator[tuple[int, Any, torch.Tensor, dict]]:
        """Yield (index, frame as given, logits (E, S, S), ResizeSquare params) for every frame, in order.

        frames: PIL images, HxWx3 RGB uint8 arrays or paths, read one at a time (a generator is fine).
        """
        if isinstance(expressions, str) or not expressions:
            raise ValueError("give a non-empty list of expressions")
        tokens = self.model.tokenize(list(expressions))
        t, stride, d = self.window, self.stride, self.dilation
        # per sub-video k (frames k, k + d, ...): its last T frames (index, 3xSxS), next and last window starts
        # and its frame count, all in the sub-video's own numbering
        resized: list[deque[tuple[int, torch.Tensor]]] = [deque(maxlen=t) for _ in range(d)]
        next_start, last_start, count = [0] * d, [None] * d, [0] * d
        pending: dict[int, list] = {}  # index -> [frame, params, best centrality, logits (E, S, S) or None]

        def run(indices: list[int], clip: list[torch.Tensor]) -> None:
            logits = self._run(clip, tokens)
            for pos, index in enumerate(indices):
                centrality = min(pos, t - 1 - pos)
                entry = pending[index]
                if entry[3] is None or centrality > entry[2]:  # strict: ties keep the earlier window
                    entry[2], entry[3] = centrality, logits[:, pos]

        def emit(upto: int) -> Iterator[tuple[int, Any, torch.Tensor, dict]]:
            for index in sorted(i for i in pending if i <= upto):
                frame, params, _, logits = pending.pop(index)
                yield index, frame, logits, params

        for index, frame in enumerate(frames):
            k, local = index % d, index // d
            image, _, params = self.transform(as_pil(frame), None)
            held = resized[k]
            held.append((index, image))
            pending[index] = [frame, params, -1, None]
            count[k] = local + 1
            self.max_held = max(self.max_held, sum(map(len, resized)) + len(pending))
            if local - t + 1 == next_start[k]:
                run([i for i, _ in held], [x for _, x in held])
                last_start[k], next_start[k] = next_start[k], next_start[k] + stride
            yield from emit(index - t * d)
        for k, held in enumerate(resized):
            if count[k] == 0:  # a video of fewer than `dilation` frames
                continue
            if count[k] < t:  # a (sub-)video shorter than the window: one window of repeated frames, as in training
                picks = repeat_indices(count[k], t)
                run([held[i][0] for i in picks], [held[i][1] for i in picks])
            elif last_start[k] != count[k] - t:  # the last window ends on the last frame
                run([i for i, _ in held], [x for _, x in held])
        yield from emit(sum(count))

    def stream(self, frames: Iterable[Any], expressions: list[str],
               threshold: float = 0.5) -> Iterator[tuple[int, Any, list[np.ndarray]]]:
        """Yield (index, frame as given, [bool HxW mask per expression at the frame's size]) in frame order."""
        for index, frame, logits, params in self.stream_logits(frames, expressions):
            probs = self.transform.invert(logits.sigmoid(), params)  # (E, H, W)
            yield index, frame, [p.numpy() > threshold for p in probs]


def _read_video(capture) -> Iterator[np.ndarray]:
    """RGB uint8 frames from an opened cv2.VideoCapture, one at a time."""
    import cv2

    while True:
        ok, bgr = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _open_writer(out: Path, codecs, fps: float, size: tuple[int, int]):
    """(an opened cv2.VideoWriter, its path) with the first (fourcc, suffix) this OpenCV build can write; an
    empty suffix keeps `out`'s own."""
    import cv2

    for fourcc, suffix in codecs:
        path = out.with_suffix(suffix) if suffix else out
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, path
        writer.release()
    raise ValueError(f"{out}: OpenCV cannot write a video there with {' or '.join(c for c, _ in codecs)}")


def predict_video(path: str | Path, expressions: list[str], out: str | Path, *, segmenter: VideoSegmenter,
                  threshold: float = 0.5, max_frames: int | None = None, masks_dir: str | Path | None = None,
                  codecs: tuple[tuple[str, str], ...] = (("mp4v", ""),)) -> dict[str, Any]:
    """Segment `expressions` in the video at `path`; write an overlay video to `out` and, with `masks_dir`,
    one 0/255 PNG per frame and expression (`<masks_dir>/<k>/<frame:05d>.png`).

    codecs: (fourcc, suffix) pairs tried in order, the first one OpenCV can write wins (suffix "" keeps `out`'s;
    default mp4v). Returns a summary: the overlay's path ("out"), frames, fps of the input, size, seconds,
    frames per second of the whole pipeline.
    """
    import cv2

    path, out = Path(path), Path(out)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video (unknown container or codec)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    out.parent.mkdir(parents=True, exist_ok=True)
    writer, frames, tic = None, 0, time.perf_counter()
    pixels = [0] * len(expressions)
    try:
        source = _read_video(capture)
        if max_frames is not None:
            source = (f for _, f in zip(range(max_frames), source))
        for index, frame, masks in segmenter.stream(source, expressions, threshold):
            image = Image.fromarray(frame)
            for k, mask in enumerate(masks):
                image = overlay_mask(image, mask, color=PALETTE[k % len(PALETTE)])
                pixels[k] += int(mask.sum())
                if masks_dir is not None:
                    folder = Path(masks_dir) / str(k)
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{index:05d}.png")
            if writer is None:
                writer, out = _open_writer(out, codecs, fps, image.size)
            writer.write(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
            frames += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise ValueError(f"{path}: no frame could be decoded")
    seconds = time.perf_counter() - tic
    return {"video": str(path), "out": str(out), "frames": frames, "input_fps": fps, "seconds": seconds,
            "fps": frames / seconds, "expressions": list(expressions), "mask_pixels": pixels,
            "window": segmenter.window, "stride": segmenter.stride, "dilation": segmenter.dilation}
