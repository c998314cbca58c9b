"""`vlalign serve`: a local web demo of the trained models (referring image / video segmentation, re-id).

    from vlalign.serve import Limits, build_app, launch
    launch(build_app(["runs/demo/model"]), port=7860)   # http://127.0.0.1:7860

Layout: `limits.py` (what a request may hold), `models.py` (which model folders are offered, loaded once),
`tabs.py` (each tab's handler, without gradio), `app.py` (the gradio page, queue and launch). gradio is an
optional dependency: `pip install 'vlalign[serve]'`.
"""

from vlalign.serve.limits import InputError, Limits
from vlalign.serve.models import DEMO_WEIGHTS, find_model_folders

__all__ = ["DEMO_WEIGHTS", "InputError", "Limits", "build_app", "find_model_folders", "launch"]


def __getattr__(name: str):
    # gradio takes seconds to import: only when the app itself is asked for
    if name in ("build_app", "launch"):
        from vlalign.serve import app

        return getattr(app, name)
    raise AttributeError(name)
