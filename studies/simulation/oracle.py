"""The simulated observer's knowledge of the scene: where each object is in the picture.

A person looking at a heat map over a photo knows where the dog and the cat are. A simulated
observer cannot see that from the map alone, so this module hands it the ground truth of the
*image* (the pixel mask if the image set has one, else the category boxes), and nothing else:
not the item's right option, not the method, not the model. It reads the database directly and
is deliberately separate from the HTTP path the observer's answers take.

Masks store ``1 + index into image.categories``; boxes are pixel corners of the original image.
Both are scaled to the square display size stimuli are rendered at (resized, not cropped).
"""

from __future__ import annotations

import io

import numpy as np
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from studies.models import Image, Item
from studies.simulation.observers import Scene


def scene_for_image(*, image: Image, width: int, height: int) -> Scene:
    """Region masks (``height x width`` booleans) of each of the image's categories."""
    regions: dict[str, np.ndarray] = {}
    if image.mask and default_storage.exists(image.mask.name):
        with default_storage.open(image.mask.name, "rb") as handle:
            labels = PILImage.open(io.BytesIO(handle.read())).convert("L")
        labels_array = np.asarray(labels.resize((width, height), PILImage.Resampling.NEAREST))
        for index, category in enumerate(image.categories):
            region = labels_array == index + 1
            if region.any():
                regions[category] = region
    sx, sy = width / image.width, height / image.height
    for box in image.boxes or []:
        category = box.get("category")
        if category in regions:
            continue
        region = np.zeros((height, width), bool)
        x0, y0 = int(round(box["x0"] * sx)), int(round(box["y0"] * sy))
        x1, y1 = int(round(box["x1"] * sx)), int(round(box["y1"] * sy))
        region[y0:y1, x0:x1] = True
        regions[category] = regions.get(category, np.zeros_like(region)) | region
    return Scene(regions=regions)


def scene_for_trial(*, trial_token: str, width: int, height: int) -> tuple[Scene, str]:
    """The scene behind a served trial, and the class label its page names.

    ``trial_token`` is what the API calls the trial's token: an assignment token for main and
    catch trials, an item's public id for practice trials. The label is the category a trust
    trial's page states that both robots predicted (``item.target_label``); discrimination
    observers ignore it.
    """
    item = Item.objects.select_related("image").filter(assignments__token=trial_token).first()
    if item is None:
        item = Item.objects.select_related("image").get(public_id=trial_token)
    return scene_for_image(image=item.image, width=width, height=height), item.target_label
