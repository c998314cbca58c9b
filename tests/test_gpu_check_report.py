"""benchmarks/gpu_check.py's report (the GPU run itself needs CUDA; its rendering does not)."""

import json

from conftest import load_benchmark

ROW = {"eval": {"cuda_fp32": {"rel_l2": 1e-6, "mask_iou": 1.0}, "cuda_bf16": {"rel_l2": 3e-3, "mask_iou": 1.0}},
       "train": {"fp32": {"loss": 1.5, "finite_losses": True, "finite_grads": True, "params_with_grad": 10},
                 "bf16": {"loss": 1.51, "finite_losses": True, "finite_grads": True, "params_with_grad": 10}},
       "speed": {"params_m": 5.0, "infer_batch": 4, "images_per_batch": 12, "infer_fp32_tf32_img_s": 100.0,
                 "infer_bf16_img_s": 150.0, "train_batch": 2, "train_step_bf16_s": 0.25, "train_peak_gib": 1.0}}


def test_render_flags_bad_gradients_errors_and_clip_rows(tmp_path):
    gpu = load_benchmark("gpu_check.py")
    bad = json.loads(json.dumps(ROW))
    bad["train"]["bf16"]["finite_grads"] = False
    fewer = json.loads(json.dumps(ROW))
    fewer["train"]["bf16"]["params_with_grad"] = 9  # a parameter lost its gradient under bf16
    report = {"device": "GPU X", "torch": "2.x", "python": "3.12", "cli": {"train": {"rc": 0, "s": 3.0}},
              "models": {"good": ROW, "bad": bad, "fewer": fewer, "broken": {"error": "Traceback\nValueError: x"}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    text = gpu.render([str(path)])
    rows = {}  # the first table's row of each model (the speed table repeats the names)
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    assert rows["good"].endswith("| yes (10) |") and "| 1.0e-06 | 3.0e-03 |" in rows["good"]
    assert "| NO " in rows["bad"] and "| NO " in rows["fewer"]
    assert "ValueError: x" in rows["broken"]
    assert "| 4 clips (12 frames) | 100 | 150 | 2 | 250 | 1.00 |" in text
    assert "| train | 0 | 3.0 |" in text
