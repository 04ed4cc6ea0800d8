"""A static HTML report of a run, readable at a glance and openable from disk (no network, images beside the page).

Sections: summary and metrics (when ground truth is known), a 2-D map of the embeddings (t-SNE) coloured by cluster
and by true type, the confusion matrix after the optimal cluster↔class assignment, the K-selection curve, and per
cluster a gallery — each thumbnail with the predicted anomaly contour (red) and the ground-truth contour (green) when
known, beside its anomaly-map overlay — ordered from the most to the least typical member (distance to the cluster's
centroid in embedding space).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from . import runtime
from .data import DataError, GroundTruth, load_ground_truth, load_image
from .runs import RunFolder, output_names
from .stability import stability_reading

__all__ = ["write_report"]

PRED_RGB = np.array([255, 40, 40], np.uint8)
TRUE_RGB = np.array([40, 230, 60], np.uint8)

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#eee} .gallery{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:3px;font-size:.72em;width:min-content}
figure img{display:block} figcaption{overflow-wrap:anywhere;max-width:100%}
.pair{display:flex;gap:2px} .note{color:#666;font-size:.85em} .tag{font-weight:bold}
.edit{margin:.3em 0;font-size:.85em} .edit input{width:12em} .move-to{font-size:.9em;max-width:100%} #edits-toolbar{position:sticky;top:0;background:#fafafa;padding:.4em 0;z-index:1}
"""


def _contour(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=1, border_value=0)


def _thumbs(img: np.ndarray, heat: np.ndarray, pred: np.ndarray, true: np.ndarray | None, side: int) -> tuple[Image.Image, Image.Image]:
    """(image with contours, heat overlay) at ``side`` px on the longer edge."""
    h, w = img.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    base = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR)).copy()
    resize_mask = lambda m: np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    contoured = base.copy()
    if true is not None and true.any():
        contoured[_contour(resize_mask(true))] = TRUE_RGB
    if pred.any():
        contoured[_contour(resize_mask(pred))] = PRED_RGB
    heat_small = np.asarray(Image.fromarray(heat).resize(size, Image.BILINEAR), np.float32)
    overlay = (0.45 * base + 0.55 * heat_small).clip(0, 255).astype(np.uint8)
    return Image.fromarray(contoured), Image.fromarray(overlay)


def _heat_rgb(m: np.ndarray, lo: float, hi: float) -> np.ndarray:
    from matplotlib import colormaps

    norm = np.clip((np.asarray(m, np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)
    return (colormaps["inferno"](norm)[..., :3] * 255).astype(np.uint8)


def _embedding_map(x: np.ndarray, labels: np.ndarray, truth: list[str] | None, path: Path, seed: int = 0) -> str:
    """t-SNE of the image embeddings (PCA to 50 dims first), coloured by cluster and by true type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(x)
    if n < 4:
        return "too few images for a 2-D map"
    z = x.astype(np.float64)
    if z.shape[1] > 50 and n > 50:
        z = PCA(50, random_state=seed).fit_transform(z)
    xy = TSNE(2, perplexity=float(min(30, max(2, (n - 1) // 3))), init="pca", random_state=seed).fit_transform(z)
    panels = [("by cluster", labels.astype(str))] + ([("by true type", np.array(truth))] if truth else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (title, lab) in zip(axes[0], panels):
        for i, name in enumerate(sorted(set(lab))):
            sel = lab == name
            ax.scatter(xy[sel, 0], xy[sel, 1], s=12, color=plt.cm.tab10(i % 10), label=str(name))
        ax.set_title(f"t-SNE of embeddings, {title}")
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=1.5, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return ""


def _k_curve_png(curve: dict[str, float], chosen: int, method: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(int(k) for k in curve)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ks, [curve[str(k)] for k in ks], "o-")
    ax.axvline(chosen, color="r", ls="--", label=f"chosen K = {chosen}")
    ax.set_xlabel("K"), ax.set_ylabel(method), ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


# ---------------------------------------------------------------------------------------------- edit controls
def _current_clustering(run_dir: str, clustering: Any) -> tuple[Any, Any]:
    """The run's current labels (the fit's, with ``relabel``/``refit`` edits applied) as a Clustering, and its state."""
    import dataclasses

    from .labelling import RunLabels

    state = RunLabels(run_dir).state()
    if np.array_equal(state.labels, np.asarray(clustering.labels)):
        return clustering, state
    return dataclasses.replace(clustering, labels=state.labels, n_clusters=int(state.labels.max()) + 1, probabilities=None), state


def _edit_toolbar(run_dir: str) -> str:
    """The button that downloads the edits made on the page, with a preview and the command that applies them."""
    cmd = html.escape(f"anomaly-cluster relabel --run {Path(run_dir).name} --edits edits.json")
    return ("<div id='edits-toolbar' class='edit'><button id='download-edits' type='button'>Download edits (edits.json)</button> "
            f"<span class='note'>name clusters, merge them, move images; then apply with <code>{cmd}</code></span>"
            "<pre id='edits-preview' class='note'></pre></div>")


def _options(state: Any, exclude: int, blank: str, extra: str = "") -> str:
    opts = [f"<option value=''>{html.escape(blank)}</option>"]
    opts += [f"<option value='{j}'>{j}{' ' + html.escape(state.names[j]) if j in state.names else ''}</option>" for j in state.clusters if j != exclude]
    return "".join(opts) + extra


def _cluster_controls(k: int, state: Any) -> str:
    """Per cluster: a name field (pre-filled with its current name) and a 'merge with' choice."""
    name = html.escape(state.names.get(int(k), ""), quote=True)
    return (f"<div class='edit'><label>name <input class='cluster-name' data-cluster='{k}' value='{name}' placeholder='unnamed'></label> "
            f"<label>merge with <select class='merge-with' data-cluster='{k}'>{_options(state, k, '—')}</select></label></div>")


def _image_control(image: str, k: int, state: Any) -> str:
    """Per image: a 'move to' choice (another cluster, or a new one)."""
    options = _options(state, k, "move to…", "<option value='new'>new cluster</option>")
    return f"<br><select class='move-to' data-image='{html.escape(image, quote=True)}' title='move to'>{options}</select>"


EDIT_SCRIPT = r"""<script>
function collectEdits() {
  const e = {names: {}, merge: {}, move: {}};
  document.querySelectorAll('input.cluster-name').forEach(i => {
    if (i.value.trim() !== i.defaultValue.trim()) e.names[i.dataset.cluster] = i.value.trim(); });
  document.querySelectorAll('select.merge-with').forEach(s => {
    if (s.value !== '') e.merge[s.dataset.cluster] = parseInt(s.value, 10); });
  document.querySelectorAll('select.move-to').forEach(s => {
    if (s.value !== '') e.move[s.dataset.image] = s.value === 'new' ? NEW_CLUSTER : parseInt(s.value, 10); });
  for (const key of Object.keys(e)) if (Object.keys(e[key]).length === 0) delete e[key];
  return e;
}
function downloadEdits() {
  const text = JSON.stringify(collectEdits(), null, 1);
  document.getElementById('edits-preview').textContent = text;
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text + '\n'], {type: 'application/json'}));
  a.download = 'edits.json';
  document.body.appendChild(a);
  a.click();
  a.remove();
}
document.getElementById('download-edits').addEventListener('click', downloadEdits);
</script>"""


def _edit_script(state: Any) -> str:
    """The page's script: collects the changed fields into ``{names, merge, move}`` and downloads them as JSON."""
    return EDIT_SCRIPT.replace("NEW_CLUSTER", str(int(state.labels.max()) + 1))


def write_report(run_dir: str, labels_csv: str | None = None, thumb: int = 176, max_per_cluster: int = 60) -> Path:
    """Write ``<run>/report/index.html`` (+ thumbnails and plots beside it) and return its path. The folder is
    built beside the run and renamed into place whole, so a failure (a full disk) leaves the old report or none."""
    from .store import atomic_dir

    final = Path(run_dir) / "report"
    try:
        with atomic_dir(final) as out:
            _write_report(run_dir, out, labels_csv, thumb, max_per_cluster)
    except OSError as exc:
        if exc.errno == 28 and not exc.filename:  # ENOSPC from a write: name the folder that could not be written
            raise OSError(exc.errno, exc.strerror, str(final)) from None
        raise
    return final / "index.html"


def _write_report(run_dir: str, out: Path, labels_csv: str | None, thumb: int, max_per_cluster: int) -> Path:
    run = RunFolder.open(run_dir)
    images = run.images()
    fitted, maps, regions, emb = run.record("clustering"), run.record("maps"), run.record("regions"), run.record("embeddings")
    clustering, state = _current_clustering(run_dir, fitted)
    edited = clustering is not fitted  # relabel / refit edits changed the fit's clusters
    stability = _fitted_stability(run_dir)
    labels = np.asarray(clustering.labels)
    x = emb.image_vectors()
    (out / "img").mkdir(parents=True, exist_ok=True)
    gt = _ground_truth(images, labels_csv)
    truth_names = list(gt.labels) if gt is not None else None
    config = run.config
    parts = _summary_parts(run_dir, images, clustering, config)
    if gt is not None:
        parts += _truth_parts(images, maps, clustering, labels, gt, labels_csv)
    parts += _embedding_parts(x, labels, truth_names, out, int(config.get("seed", 0) or 0))
    parts += _stability_parts(stability, edited)
    parts += _k_selection_parts(run_dir, out)
    cluster_stability = None if edited or not stability else stability.get("cluster_scores")
    parts += _cluster_parts(run_dir, images, maps, regions, labels, x, state, gt, truth_names, out, thumb, max_per_cluster, cluster_stability)
    parts.append("</section>" + _edit_script(state) + "</body></html>")
    page = out / "index.html"
    page.write_text("\n".join(parts))
    return page


def _ground_truth(images: Any, labels_csv: str | None) -> GroundTruth | None:
    """The set's ground truth (type labels, masks) when it has any, else None."""
    try:
        return load_ground_truth(images, labels_csv)
    except (DataError, OSError):
        return None


def _summary_parts(run_dir: str, images: Any, clustering: Any, config: dict[str, Any]) -> list[str]:
    """The page head, its title and the summary section (plugins, seconds per stage, cache reuse)."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>anomaly-cluster report</title><style>{CSS}</style></head><body>"]
    set_name = Path(images.root).parent.name if Path(images.root).name == "test" else Path(images.root).name
    parts.append(f"<h1>Anomaly clusters: {html.escape(set_name)} ({len(images)} images, K = {clustering.n_clusters})</h1>")
    seconds = (summary.get("compute_seconds") or summary.get("seconds", {})).items()
    parts.append("<section id='summary'><p>" + html.escape(
        f"localizer {config['localizer']['name']} · binarizer {config['binarizer']['name']} · representation "
        f"{config['representation']['name']} · clusterer {config['clusterer']['name']} · K {clustering.k_method}"
    ) + "</p>" + _table(["stage", "seconds to compute", "reused from cache"], [[k, v, "yes" if summary.get("cache_reused", {}).get(k) else "no"] for k, v in seconds]) + "</section>")
    return parts


def _truth_parts(images: Any, maps: Any, clustering: Any, labels: np.ndarray, gt: GroundTruth, labels_csv: str | None) -> list[str]:
    """The metrics against ground truth and the confusion matrix (clusters matched to types)."""
    from .evaluation import evaluate_records
    from .metrics import hungarian_mapping

    result = evaluate_records(images, maps, clustering, labels_csv)
    c, l = result["clustering"], result["localization"]
    f = lambda v: "—" if v is None else f"{v:.3f}"
    parts = ["<section id='metrics'><h2>Metrics against ground truth</h2>" + _table(
        ["NMI", "ARI", "F1 micro", "F1 macro", "PRO@0.3", "AUROC pixel", "AUROC image"],
        [[f(c["nmi"]), f(c["ari"]), f(c["f1_micro"]), f(c["f1_macro"]), f(l["pro_30"]), f(l["auroc_pixel"]), f(l["auroc_image"])]],
    ) + f"<p class='note'>masks: {html.escape(l['masks'])}</p></section>"]
    true_ids, classes = gt.label_ids()
    mapping = hungarian_mapping(true_ids, labels)
    order = sorted(range(clustering.n_clusters), key=lambda k: (mapping.get(k, -1) < 0, mapping.get(k, 99)))
    rows = [[cname] + [int(np.sum((true_ids == ci) & (labels == k))) for k in order] for ci, cname in enumerate(classes)]
    header = ["true type \\ cluster"] + [f"{k} → {classes[mapping[k]] if mapping.get(k, -1) >= 0 else '—'}" for k in order]
    parts.append("<section id='confusion'><h2>Confusion matrix (clusters matched to types by optimal assignment)</h2>" + _table(header, rows) + "</section>")
    return parts


def _embedding_parts(x: np.ndarray, labels: np.ndarray, truth_names: list[str] | None, out: Path, seed: int) -> list[str]:
    note = _embedding_map(x, labels, truth_names, out / "embedding_map.png", seed=seed)
    return ["<section id='embedding-map'><h2>Embedding map</h2>",
            f"<p class='note'>{html.escape(note)}</p>" if note else "<img src='embedding_map.png' alt='t-SNE of the embeddings'>",
            "</section>"]


def _fitted_stability(run_dir: str) -> dict[str, Any] | None:
    """The run's stability entry of ``summary.json`` (None: not measured)."""
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()).get("stability") if path.exists() else None


def _stability_parts(stab: dict[str, Any] | None, edited: bool) -> list[str]:
    """The stability section: how far refits on random subsets agree with the fitted clusters (:mod:`.stability`)."""
    if not stab or stab.get("score") is None:
        return []
    text = (f"{stab['n_resamples']} refits of the clusterer on random {stab['fraction']:.0%} subsets agree with the fitted "
            f"clusters at NMI {stab['score']:.3f} ± {stab['score_std']:.3f}. Per cluster (in each cluster's title): the mean "
            "Jaccard overlap with its best-matching refit cluster (Hennig: < 0.6 dissolves, > 0.75 stable, > 0.85 highly "
            "stable). Stability is reproducibility, not correctness; review the least stable clusters first.")
    if edited:
        text += " The labels have been edited since: these figures are the fitted clusters'."
    return [f"<section id='stability'><h2>Stability</h2><p>{html.escape(text)}</p></section>"]


def _k_selection_parts(run_dir: str, out: Path) -> list[str]:
    kfile = Path(run_dir) / "k_selection.json"
    if not kfile.exists():
        return []
    k = json.loads(kfile.read_text())
    _k_curve_png(k["curve"], k["chosen"], k["method"], out / "k_selection.png")
    return [f"<section id='k-selection'><h2>Choice of K ({html.escape(k['method'])})</h2><img src='k_selection.png' alt='K-selection curve'></section>"]


def _typical_order(labels: np.ndarray, x: np.ndarray, clusters: Any) -> list[tuple[int, np.ndarray]]:
    """Per non-empty cluster, its members from the most to the least typical (distance to the centroid)."""
    work = []
    for k in clusters:
        members = np.flatnonzero(labels == k)
        if len(members) == 0:
            continue
        dist = np.linalg.norm(x[members] - x[members].mean(0), axis=1)
        work.append((k, members[np.argsort(dist)]))
    return work


@dataclass(frozen=True)
class _Gallery:
    """What every thumbnail of the clusters section needs: the run's records, the ground truth, where to write."""

    images: Any
    maps: np.ndarray  # N×h×w anomaly maps (float32)
    scores: Any
    regions: Any
    gt: GroundTruth | None
    truth_names: list[str] | None
    state: Any
    out: Path
    thumb: int
    heat_range: tuple[float, float]
    stems: list[str]
    cluster_stability: list[float | None] | None = None  # per fitted cluster; None once the labels were edited


def _cluster_parts(run_dir: str, images: Any, maps: Any, regions: Any, labels: np.ndarray, x: np.ndarray, state: Any, gt: GroundTruth | None,
                   truth_names: list[str] | None, out: Path, thumb: int, max_per_cluster: int,
                   cluster_stability: list[float | None] | None = None) -> list[str]:
    """The clusters section: the edit toolbar, then per cluster its header (with its stability, when given), controls
    and gallery of thumbnails."""
    arr = np.asarray(maps.maps, np.float32)
    g = _Gallery(images, arr, maps.scores, regions, gt, truth_names, state, out, thumb, (float(np.percentile(arr, 1)), float(arr.max())),
                 output_names(images.names), cluster_stability)
    parts = ["<section id='clusters'><h2>Clusters</h2><p class='note'>red: predicted anomaly contour; green: ground truth; right: anomaly map. Ordered from most to least typical.</p>",
             _edit_toolbar(run_dir)]
    work = _typical_order(labels, x, state.clusters)
    bar = iter(runtime.progress(range(sum(min(len(m), max_per_cluster) for _, m in work)), desc="report thumbnails", unit="img"))
    for k, members in work:
        parts += _cluster_head(g, k, members)
        for rank, i in enumerate(members[:max_per_cluster]):
            tag = " <span class='tag'>most typical</span>" if rank == 0 else (" <span class='tag'>least typical</span>" if i == members[-1] else "")
            parts.append(_figure(g, i, k, tag))
            next(bar, None)
        if len(members) > max_per_cluster:
            parts.append(f"<p class='note'>+{len(members) - max_per_cluster} more (see clusters.csv)</p>")
        parts.append("</div></div>")
    return parts


def _cluster_head(g: _Gallery, k: int, members: np.ndarray) -> list[str]:
    """A cluster's title (size, composition by true type when known), its edit controls and the gallery's start."""
    composition = ""
    if g.truth_names is not None:
        counts: dict[str, int] = {}
        for i in members:
            counts[g.truth_names[i]] = counts.get(g.truth_names[i], 0) + 1
        composition = " · " + ", ".join(f"{n} {c}" for c, n in sorted(counts.items(), key=lambda t: -t[1]))
    names = g.images.names
    scores = g.cluster_stability
    if scores is not None and k < len(scores) and scores[k] is not None:
        composition += f" · stability {scores[k]:.2f} ({stability_reading(scores[k])})"
    return [f"<div class='cluster' id='cluster-{k}'><h3>Cluster {k}: {len(members)} images{html.escape(composition)}</h3>",
            _cluster_controls(k, g.state),
            f"<p class='note'>most typical: {html.escape(names[members[0]])}; least typical: {html.escape(names[members[-1]])}</p><div class='gallery'>"]


def _figure(g: _Gallery, i: int, k: int, tag: str) -> str:
    """Write image ``i``'s two thumbnails (contours; anomaly-map overlay) and return its gallery figure."""
    img = load_image(g.images.paths[i])
    size = (img.shape[1], img.shape[0])
    pred = np.asarray(Image.fromarray(np.asarray(g.regions.masks[i], np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    true = g.gt.load_mask(i, img.shape[:2]) if g.gt is not None and g.gt.has_masks else None
    heat = _heat_rgb(g.maps[i], *g.heat_range)
    a, b = _thumbs(img, np.asarray(Image.fromarray(heat).resize(size, Image.BILINEAR)), pred, true, g.thumb)
    stem, name = g.stems[i], g.images.names[i]
    a.save(g.out / "img" / f"{stem}.jpg", quality=85)
    b.save(g.out / "img" / f"{stem}_map.jpg", quality=85)
    true_txt = f" · true: {g.truth_names[i]}" if g.truth_names else ""
    return (f"<figure><div class='pair'><img src='img/{stem}.jpg' alt='{html.escape(name)}'><img src='img/{stem}_map.jpg' alt='anomaly map'></div>"
            f"<figcaption>{html.escape(name)} · score {float(g.scores[i]):.3g}{html.escape(true_txt)}{tag}{_image_control(name, k, g.state)}</figcaption></figure>")
