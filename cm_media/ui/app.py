"""The page of `cm-media ui` (Gradio Blocks): Generate, Edit and Compare tabs over the served models.

Every control that depends on the model (condition menus, first-frame upload, steps, guidance, clip length, the
edit region's syntax, the benchmark table) is filled from the model's header when the model menu changes. The
three buttons are also the HTTP API (`/generate`, `/edit`, `/compare`, see the page's "Use via API" link); they
share one queue whose concurrency suits the machine's cores.
"""

from __future__ import annotations

import html
import inspect
import shutil
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from cm_media.ui import handlers, limits
from cm_media.ui.models import ModelInfo, ModelStore

CSS = """
.cm-media .row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.cm-media figure{margin:0}
.cm-media figcaption{font-size:12px;color:var(--body-text-color-subdued);max-width:260px}
.cm-media img.pixel,.cm-media video{image-rendering:pixelated}
.cm-media .col{border:1px solid var(--border-color-primary);border-radius:8px;padding:8px}
.cm-media .cost{font-size:13px;margin:4px 0}
"""
HEAD = '<meta name="description" content="cm-media: consistency models for images, audio and video">'


# ---------------------------------------------------------------- rendering results


def file_url(path: Path) -> str:
    """The URL Gradio serves a result file at (the results folder is an allowed path)."""
    return "gradio_api/file=" + quote(str(Path(path).resolve()))


def player(shown: handlers.Shown) -> str:
    """An inline player (audio, video with its soundtrack) or picture, with its caption."""
    src, cap = html.escape(file_url(shown.path), quote=True), html.escape(shown.caption)
    if shown.kind == "audio":
        body = f'<audio controls preload="auto" src="{src}"></audio>'
    elif shown.kind == "video":
        body = f'<video controls loop playsinline preload="auto" width="192" src="{src}"></video>'
    elif shown.kind == "image":
        body = f'<img class="pixel" src="{src}" alt="{cap}" width="96">'
    else:
        body = f'<a href="{src}">{html.escape(shown.path.name)}</a>'
    return f"<figure>{body}<figcaption>{cap}</figcaption></figure>"


def result_html(result: handlers.Result) -> str:
    items = "".join(player(s) for s in result.shown)
    return (f'<div class="cm-media"><p class="cost">{html.escape(result.summary())}</p>'
            f'<div class="row">{items}</div></div>')


def columns_html(results: list[handlers.Result]) -> str:
    """Results side by side (the Compare tab), each with its evaluations and time."""
    cols = []
    for r in results:
        items = "".join(player(s) for s in r.shown)
        cols.append(f'<div class="col"><h3>{r.nfe} evaluation(s), {r.seconds:.3f} s</h3>'
                    f'<p class="cost">{html.escape(r.summary())}</p><div class="row">{items}</div></div>')
    return f'<div class="cm-media"><div class="row">{"".join(cols)}</div></div>'


def info_markdown(results: list[handlers.Result]) -> str:
    lines = [f"- **{r.title}**: {r.nfe} network evaluation(s) per sample, **{r.seconds:.3f} s** on the server "
             f"(model {r.model_seconds:.3f} s)  \n  same as `{r.command}`" for r in results]
    return "\n".join(lines)


def about(info: ModelInfo) -> str:
    """A short description of a model for the page."""
    conds = "; ".join(f"`{c.name}`: " + (", ".join(c.classes[:12]) + (" ..." if len(c.classes) > 12 else "")
                                         if c.kind == "class" else c.kind) for c in info.conditions)
    if info.frames is not None:
        conds = (conds + "; " if conds else "") + "a first frame to animate (picture upload)"
    scale = "takes the guidance scale as an input (one evaluation per step)" if info.guided_student else \
        (f"default guidance {info.cfg_scale:g}" if info.cfg_scale is not None else "")
    parts = [f"**{info.name}**: {info.modality} model ({info.method} on {info.dataset or 'its data'})",
             f"conditions: {conds}" if conds else "unconditional", f"default {info.steps} step(s)", scale]
    return ", ".join(p for p in parts if p) + "."


# ---------------------------------------------------------------- the request panel (model, conditions)


class Panel:
    """The model menu and the controls that follow it, shared by the three tabs."""

    def __init__(self, store: ModelStore, slots: int, tab: str, first: str):
        self.store, self.tab = store, tab
        info = store.info(first)
        self.model = gr.Dropdown(store.names, value=first, label="model", elem_id=f"{tab}-model")
        self.about = gr.Markdown(about(info))
        self.conds = [gr.Dropdown(**self._cond(info, i), allow_custom_value=True, elem_id=f"{tab}-cond{i}")
                      for i in range(slots)]
        self.first_frame = None
        if tab != "edit":
            self.first_frame = gr.Image(type="filepath", label="first frame: a picture to animate",
                                        sources=["upload"], visible=info.frames is not None, height=160,
                                        elem_id=f"{tab}-first-frame")

    @staticmethod
    def _cond(info: ModelInfo, i: int) -> dict:
        if i >= len(info.conditions):
            return {"choices": [limits.ANY], "value": limits.ANY, "label": "condition", "visible": False}
        c = info.conditions[i]
        choices = [limits.ANY, *c.classes] if c.kind == "class" else [limits.ANY]
        hint = "pick one or type a comma list (cycles over the samples)" if c.kind == "class" else f"a {c.kind}"
        return {"choices": choices, "value": limits.ANY, "label": c.name, "visible": True, "info": hint}

    def updates(self, name: str) -> list:
        info = self.store.info(name)
        out = [about(info)] + [gr.update(**self._cond(info, i)) for i in range(len(self.conds))]
        if self.first_frame is not None:
            out.append(gr.update(visible=info.frames is not None, value=None))
        return out

    @property
    def outputs(self) -> list:
        return [self.about, *self.conds] + ([self.first_frame] if self.first_frame is not None else [])

    @property
    def inputs(self) -> list:
        return [self.model, *self.conds] + ([self.first_frame] if self.first_frame is not None else [])


def _guidance(info: ModelInfo) -> dict:
    value = info.cfg_scale if info.cfg_scale is not None else 1.0
    return {"value": value, "visible": info.conditional or info.guided_student}


def _length(info: ModelInfo) -> dict:
    if info.length_option is None:
        return {"visible": False, "value": 0}
    label = "seconds per clip" if info.length_option == "seconds" else "frames per clip"
    return {"visible": True, "value": info.length_default, "label": label}


def _endpoint(fn, names: list[str]):
    """`fn(*values)` as an API endpoint with named parameters (`names`, in the order of its inputs); any failure
    becomes the page's one-line error message (the server logs unexpected ones)."""
    def run(*args):
        try:
            return fn(*args)
        except Exception as exc:
            raise gr.Error(limits.message(exc), print_exception=False) from None
    run.__name__ = fn.__name__
    run.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                           for n in names])
    return run


# ---------------------------------------------------------------- the app


def build(store: ModelStore, outputs: handlers.Outputs, concurrency: int = 1) -> gr.Blocks:
    """The Blocks app over `store`, writing results under `outputs.root`."""
    slots = max([1] + [len(i.conditions) for i in store.infos.values()])
    first = store.names[0]
    info0 = store.info(first)
    queue = {"concurrency_limit": concurrency, "concurrency_id": "models"}

    with gr.Blocks(title="cm-media", analytics_enabled=False, delete_cache=(60, 900)) as app:
        gr.Markdown("# cm-media\nOne- to four-step generation of audio clips, short videos and images with "
                    "consistency models. Pick a model, ask for what to make, and compare one step with four.")
        with gr.Tab("Generate", id="generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    g = Panel(store, slots, "generate", first)
                    g_steps = gr.Slider(1, limits.MAX_STEPS, step=1, value=info0.steps, label="steps (network "
                                        "evaluations)", elem_id="generate-steps")
                    g_cfg = gr.Number(label="guidance scale (1: unguided, 0: unconditional)", **_guidance(info0))
                    g_seed = gr.Number(0, precision=0, label="seed")
                    g_n = gr.Slider(1, limits.MAX_SAMPLES, step=1, value=4, label="samples")
                    g_length = gr.Number(precision=None, **_length(info0))
                    g_go = gr.Button("Generate", variant="primary", elem_id="generate-button")
                with gr.Column(scale=2):
                    g_info = gr.Markdown(elem_id="generate-info")
                    g_html = gr.HTML(elem_id="generate-results")
                    g_files = gr.File(label="downloads (the files cm-media generate writes)",
                                      file_count="multiple", interactive=False)

        with gr.Tab("Edit", id="edit"):
            with gr.Row():
                with gr.Column(scale=1):
                    e = Panel(store, slots, "edit", first)
                    e_file = gr.File(label="file to edit", file_count="single", elem_id="edit-file")
                    e_region = gr.Textbox(value=info0.edit_default, label="region to regenerate",
                                          info=info0.edit_region, elem_id="edit-region")
                    e_steps = gr.Slider(1, limits.MAX_STEPS, step=1, value=max(2, info0.steps), label="steps")
                    e_guid = gr.Number(0, label="reconstruction guidance (keeps the region consistent "
                                       "with the rest; a backward pass per step)")
                    e_cfg = gr.Number(label="guidance scale", **_guidance(info0))
                    e_seed = gr.Number(0, precision=0, label="seed")
                    e_go = gr.Button("Edit", variant="primary", elem_id="edit-button")
                with gr.Column(scale=2):
                    e_info = gr.Markdown(elem_id="edit-info")
                    e_html = gr.HTML(elem_id="edit-results")
                    e_files = gr.File(label="downloads", file_count="multiple", interactive=False)

        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                with gr.Column(scale=1):
                    c = Panel(store, slots, "compare", first)
                    c_cfg = gr.Number(label="guidance scale", **_guidance(info0))
                    c_seed = gr.Number(0, precision=0, label="seed")
                    c_n = gr.Slider(1, 4, step=1, value=1, label="samples per step count")
                    c_go = gr.Button(f"Compare {', '.join(map(str, limits.COMPARE_STEPS))} steps",
                                     variant="primary", elem_id="compare-button")
                with gr.Column(scale=3):
                    c_info = gr.Markdown(elem_id="compare-info")
                    c_html = gr.HTML(elem_id="compare-results")
                    c_files = gr.File(label="downloads", file_count="multiple", interactive=False)
                    bench_md, bench_plot = _bench(info0, outputs)
                    c_bench = gr.Markdown(bench_md or "_No benchmark table ships for this model._",
                                          elem_id="compare-bench")
                    c_plot = gr.Image(bench_plot, label="speed vs quality (cm-media bench)", interactive=False,
                                      visible=bench_plot is not None)

        # the model menus refill their panels (no queue: these read headers only)
        def g_model(name):
            info = store.info(name)
            return [*g.updates(name), gr.update(value=info.steps), gr.update(**_guidance(info)),
                    gr.update(**_length(info))]

        def e_model(name):
            info = store.info(name)
            return [*e.updates(name), gr.update(value=info.edit_default, info=info.edit_region),
                    gr.update(value=max(2, info.steps)), gr.update(**_guidance(info))]

        def c_model(name):
            info = store.info(name)
            md, plot = _bench(info, outputs)
            return [*c.updates(name), gr.update(**_guidance(info)),
                    md or "_No benchmark table ships for this model._", gr.update(value=plot, visible=plot is not None)]

        g.model.change(g_model, g.model, [*g.outputs, g_steps, g_cfg, g_length], queue=False, api_visibility="private")
        e.model.change(e_model, e.model, [*e.outputs, e_region, e_steps, e_cfg], queue=False,
                       api_visibility="private")
        c.model.change(c_model, c.model, [*c.outputs, c_cfg, c_bench, c_plot], queue=False,
                       api_visibility="private")

        def do_generate(model, *rest):
            conds, (frame, steps, cfg, seed, n, length) = rest[:slots], rest[slots:]
            r = handlers.generate(store, outputs, model, conds, frame, steps, cfg, seed, n, length)
            return info_markdown([r]), result_html(r), [str(p) for p in r.files]

        def do_edit(model, *rest):
            conds, (upload, region, steps, guidance, cfg, seed) = rest[:slots], rest[slots:]
            r = handlers.edit(store, outputs, model, upload, region, conds, steps, seed, guidance, cfg)
            return info_markdown([r]), result_html(r), [str(p) for p in r.files]

        def do_compare(model, *rest):
            conds, (frame, cfg, seed, n) = rest[:slots], rest[slots:]
            results = handlers.compare(store, outputs, model, conds, frame, cfg, seed, n)
            return info_markdown(results), columns_html(results), [str(p) for r in results for p in r.files]

        def pick_model(request: gr.Request):
            """/?model=NAME opens the page on that model (a link to share); otherwise the first one."""
            name = dict(request.query_params).get("model") if request is not None else None
            name = name if name in store.infos else first
            return [name, name, name]

        app.load(pick_model, None, [g.model, e.model, c.model], queue=False, api_visibility="private")

        conds = [f"condition_{i + 1}" for i in range(slots)]
        do_generate = _endpoint(do_generate, ["model", *conds, "first_frame", "steps", "cfg_scale", "seed", "n",
                                              "length"])
        do_edit = _endpoint(do_edit, ["model", *conds, "file", "region", "steps", "guidance", "cfg_scale", "seed"])
        do_compare = _endpoint(do_compare, ["model", *conds, "first_frame", "cfg_scale", "seed", "n"])
        g_go.click(do_generate, [*g.inputs, g_steps, g_cfg, g_seed, g_n, g_length], [g_info, g_html, g_files],
                   api_name="generate", **queue)
        e_go.click(do_edit, [*e.inputs, e_file, e_region, e_steps, e_guid, e_cfg, e_seed], [e_info, e_html, e_files],
                   api_name="edit", **queue)
        c_go.click(do_compare, [*c.inputs, c_cfg, c_seed, c_n], [c_info, c_html, c_files], api_name="compare",
                   **queue)
    return app


def _bench(info: ModelInfo, outputs: handlers.Outputs) -> tuple[str, str | None]:
    """The model's benchmark table and a copy of its plot inside the results folder (which the server serves)."""
    md, plot = handlers.bench_table(info)
    if plot is None:
        return md, None
    copy = outputs.root / "bench" / plot.name
    if not copy.is_file():
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(plot, copy)
    return md, str(copy)
