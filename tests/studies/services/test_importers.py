"""Importers: good input lands whole; each kind of bad input is named and leaves nothing behind."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from PIL import Image as PILImage

from studies.models import Image, ImageSet
from studies.services.importers import (
    ImportRejected,
    image_set_import,
    records_from_folder,
    records_from_manifest,
    records_from_voc,
    zip_extract,
)

pytestmark = pytest.mark.django_db


def write_manifest(folder: Path, rows: list[str]) -> None:
    (folder / "manifest.csv").write_text("file,categories,boxes\n" + "\n".join(rows) + "\n")


@pytest.fixture
def good_folder(tmp_path: Path, make_image_bytes) -> Path:
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.png").write_bytes(make_image_bytes(64, 32, (10, 200, 10)))
    (folder / "b.jpg").write_bytes(make_image_bytes(40, 40, (10, 10, 200), fmt="JPEG"))
    write_manifest(folder, ['a.png,cat;dog,"cat:0,0,32,32;dog:32,0,64,32"', "b.jpg,dog,"])
    return folder


def assert_nothing_imported() -> None:
    assert ImageSet.objects.count() == 0
    assert Image.objects.count() == 0
    media = Path(default_storage.location)
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


def import_folder(folder: Path, **kwargs) -> ImageSet:
    records, source = records_from_folder(folder=folder)
    return image_set_import(name="set", records=records, source=source, **kwargs)


def test_manifest_import_creates_images_with_boxes_and_hashes(good_folder: Path) -> None:
    image_set = import_folder(good_folder)
    images = {image.original_name: image for image in image_set.images.all()}
    assert set(images) == {"a.png", "b.jpg"}
    assert images["a.png"].categories == ["cat", "dog"]
    assert images["a.png"].boxes[1] == {"category": "dog", "x0": 32.0, "y0": 0.0, "x1": 64.0, "y1": 32.0}
    assert (images["a.png"].width, images["a.png"].height) == (64, 32)
    assert images["a.png"].file.read() == (good_folder / "a.png").read_bytes()
    assert image_set.categories == ["cat", "dog"]


def test_two_category_filter_keeps_only_pairs(good_folder: Path) -> None:
    image_set = import_folder(good_folder, require_categories=2)
    assert [image.original_name for image in image_set.images.all()] == ["a.png"]


def test_truncated_image_is_named_and_nothing_is_imported(good_folder: Path) -> None:
    data = (good_folder / "b.jpg").read_bytes()
    (good_folder / "b.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImportRejected, match=r"manifest.csv row 3: b.jpg: image is truncated or corrupt"):
        import_folder(good_folder)
    assert_nothing_imported()


def test_content_not_matching_extension(good_folder: Path, make_image_bytes) -> None:
    (good_folder / "b.jpg").write_bytes(make_image_bytes(fmt="PNG"))
    with pytest.raises(ImportRejected, match=r"row 3: b.jpg: content is PNG but the name says .jpg"):
        import_folder(good_folder)
    assert_nothing_imported()


def test_text_file_named_png(good_folder: Path) -> None:
    (good_folder / "a.png").write_bytes(b"<html><script>alert(1)</script></html>")
    with pytest.raises(ImportRejected, match=r"row 2: a.png: content is not a PNG, JPEG or WebP image"):
        import_folder(good_folder)
    assert_nothing_imported()


def test_decompression_bomb_is_refused_before_decoding(good_folder: Path, settings) -> None:
    settings.XAISTUDY_MAX_IMAGE_PIXELS = 10_000
    buffer = io.BytesIO()
    PILImage.new("1", (4000, 4000)).save(buffer, format="PNG")  # tiny file, 16 MP when decoded
    assert len(buffer.getvalue()) < 10_000
    (good_folder / "a.png").write_bytes(buffer.getvalue())
    write_manifest(good_folder, ["a.png,cat;dog,", "b.jpg,dog,"])
    with pytest.raises(ImportRejected, match=r"row 2: a.png: image is 4000x4000 = 16,000,000 pixels, over the cap"):
        import_folder(good_folder)
    assert_nothing_imported()


def test_file_over_size_limit(good_folder: Path, settings) -> None:
    settings.XAISTUDY_MAX_IMAGE_BYTES = 100
    with pytest.raises(ImportRejected, match=r"row 2: a.png: file is [\d,]+ bytes, over the limit of 100 bytes"):
        import_folder(good_folder)
    assert_nothing_imported()


def test_box_outside_image(good_folder: Path) -> None:
    write_manifest(good_folder, ['a.png,cat;dog,"cat:0,0,32,32;dog:32,0,65,32"', "b.jpg,dog,"])
    with pytest.raises(ImportRejected, match=r"row 2: box dog:32,0,65,32 lies outside the 64x32 image"):
        import_folder(good_folder)
    assert_nothing_imported()


def test_unknown_category(good_folder: Path) -> None:
    with pytest.raises(ImportRejected, match=r"row 2: unknown category \['cat'\]"):
        import_folder(good_folder, categories=["dog", "bird"])
    assert_nothing_imported()


def test_malformed_box_and_missing_file_are_all_listed(good_folder: Path) -> None:
    write_manifest(good_folder, ["a.png,cat,cat:0;0", "missing.png,dog,"])
    with pytest.raises(ImportRejected) as info:
        records_from_manifest(folder=good_folder)
    assert info.value.problems == [
        "manifest.csv row 2: box 'cat:0' is not 'category:x0,y0,x1,y1'",
        "manifest.csv row 2: box '0' is not 'category:x0,y0,x1,y1'",
        "manifest.csv row 3: file missing.png not found",
    ]


def test_path_traversal_in_manifest(good_folder: Path) -> None:
    write_manifest(good_folder, ["../secret.png,cat,"])
    with pytest.raises(ImportRejected, match=r"row 2: file '../secret.png' is not a relative path inside the folder"):
        records_from_manifest(folder=good_folder)


def test_manifest_without_required_columns(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("name,label\nx.png,cat\n")
    with pytest.raises(ImportRejected, match=r"needs the columns 'file' and 'categories'"):
        records_from_manifest(folder=tmp_path)


def test_existing_set_name_is_refused_and_kept(good_folder: Path) -> None:
    first = import_folder(good_folder)
    with pytest.raises(ImportRejected, match="an image set named 'set' already exists"):
        import_folder(good_folder)
    assert ImageSet.objects.get() == first
    assert Image.objects.count() == 2


def voc_tree(root: Path, make_image_bytes, objects: dict[str, list[tuple[str, int, int, int, int]]]) -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for stem, boxes in objects.items():
        (root / "JPEGImages" / f"{stem}.jpg").write_bytes(make_image_bytes(100, 80, fmt="JPEG"))
        xml_objects = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for name, x0, y0, x1, y1 in boxes
        )
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>100</width><height>80</height></size>"
            f"{xml_objects}</annotation>"
        )
    return root


def test_voc_import_with_two_category_filter(tmp_path: Path, make_image_bytes) -> None:
    root = voc_tree(
        tmp_path / "voc",
        make_image_bytes,
        {
            "000001": [("cat", 1, 1, 50, 80), ("dog", 51, 1, 100, 80)],
            "000002": [("cat", 1, 1, 50, 80)],
            "000003": [("cat", 1, 1, 20, 20), ("cat", 30, 30, 60, 60), ("person", 1, 1, 100, 80)],
        },
    )
    records, source = records_from_folder(folder=root)
    assert source == ImageSet.Source.VOC
    image_set = image_set_import(name="voc", records=records, source=source, require_categories=2)
    names = sorted(image.original_name for image in image_set.images.all())
    assert names == ["000001.jpg", "000003.jpg"]
    first = image_set.images.get(original_name="000001.jpg")
    assert first.boxes[0] == {"category": "cat", "x0": 0.0, "y0": 0.0, "x1": 50.0, "y1": 80.0}
    assert image_set.images.get(original_name="000003.jpg").categories == ["cat", "person"]


def test_voc_broken_xml_is_named(tmp_path: Path, make_image_bytes) -> None:
    root = voc_tree(tmp_path / "voc", make_image_bytes, {"000001": [("cat", 1, 1, 50, 80)]})
    (root / "Annotations" / "000002.xml").write_text("<annotation><filename>")
    with pytest.raises(ImportRejected, match=r"Annotations/000002.xml: not well-formed XML"):
        records_from_voc(folder=root)


def test_voc_box_outside_image(tmp_path: Path, make_image_bytes) -> None:
    root = voc_tree(tmp_path / "voc", make_image_bytes, {"000001": [("cat", 1, 1, 50, 80), ("dog", 60, 1, 140, 80)]})
    with pytest.raises(ImportRejected, match=r"Annotations/000001.xml: box dog:59,0,140,80 lies outside the 100x80 image"):
        image_set_import(name="voc", records=records_from_voc(folder=root))
    assert_nothing_imported()


def zip_of(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, Path("upload") / path.relative_to(folder))
    return buffer.getvalue()


def test_zip_round_trip_and_limits(tmp_path: Path, good_folder: Path, settings) -> None:
    data = zip_of(good_folder)
    folder = zip_extract(data=data, destination=tmp_path / "unzipped")
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.jpg", "manifest.csv"]
    settings.XAISTUDY_MAX_UPLOAD_BYTES = 100
    with pytest.raises(ImportRejected, match="over the limit of 100 bytes"):
        zip_extract(data=data, destination=tmp_path / "again")
    with pytest.raises(ImportRejected, match="upload is not a zip archive"):
        zip_extract(data=b"PK not really", destination=tmp_path / "bad")


def test_zip_slip_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil.txt", "x")
    with pytest.raises(ImportRejected, match=r"'../evil.txt' escapes the archive folder"):
        zip_extract(data=buffer.getvalue(), destination=tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_admin_zip_upload_imports_and_reports_errors(staff_client, good_folder: Path) -> None:
    url = "/admin/studies/imageset/import-zip/"
    assert staff_client.get(url).status_code == 200
    archive = io.BytesIO(zip_of(good_folder))
    archive.name = "set.zip"
    response = staff_client.post(url, {"name": "zipped", "archive": archive, "only_two_categories": "on"})
    assert response.status_code == 302
    assert ImageSet.objects.get(name="zipped").images.count() == 1
    (good_folder / "a.png").write_bytes(b"not an image")
    broken = io.BytesIO(zip_of(good_folder))
    broken.name = "broken.zip"
    response = staff_client.post(url, {"name": "broken", "archive": broken})
    assert response.status_code == 200
    assert "content is not a PNG, JPEG or WebP image" in response.content.decode()
    assert not ImageSet.objects.filter(name="broken").exists()


def test_management_command(good_folder: Path) -> None:
    call_command("import_images", "cmdset", str(good_folder), "--two-categories")
    assert ImageSet.objects.get(name="cmdset").images.count() == 1
    with pytest.raises(CommandError, match="already exists"):
        call_command("import_images", "cmdset", str(good_folder))
