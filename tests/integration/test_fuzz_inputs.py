"""Bad uploads and forbidden reads on PostgreSQL (adds to tests/studies/test_importers.py).

Each malformed manifest or annotation gets a clear ``ImportRejected`` naming the file (and row),
and nothing is half-imported; a non-staff user gets no export and no results page.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from studies.fixtures.builders import make_worker_study
from studies.models import Image, ImageSet
from studies.services.importers import ImportRejected, image_set_import, records_from_folder

pytestmark = [pytest.mark.services, pytest.mark.django_db]

HEADER = "file,categories,boxes\n"


def _folder(tmp_path: Path, make_image_bytes, manifest: bytes) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.png").write_bytes(make_image_bytes(32, 32))
    (folder / "manifest.csv").write_bytes(manifest)
    return folder


def _import(folder: Path) -> ImageSet:
    records, source = records_from_folder(folder=folder)
    return image_set_import(name="fuzzed", records=records, source=source)


def _nothing_imported() -> None:
    assert ImageSet.objects.count() == 0
    assert Image.objects.count() == 0
    media = Path(default_storage.location)
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


@pytest.mark.parametrize(
    ("manifest", "named"),
    [
        (b"", "needs the columns"),
        (b"\xff\xfe\x00f\x00i\x00l\x00e", "not UTF-8"),
        (b"file;categories\na.png;cat\n", "needs the columns"),
        (HEADER.encode() + b"a.png,ca\x00t,\n", "control character"),
        (HEADER.encode() + b"a.png\x00,cat,\n", "row 2"),
        (HEADER.encode() + b"a.png,cat,cat:0,0,\n", "row 2"),
        (HEADER.encode() + b'a.png,cat,"cat:nan,0,inf,3"\n', "row 2"),
        (HEADER.encode() + b'a.png,"cat\ndog",\n', "control character"),
    ],
    ids=["empty", "utf16", "semicolons", "nul-category", "nul-file", "short-box", "nan-box", "newline-category"],
)  # fmt: skip
def test_malformed_manifest_is_named_and_nothing_lands(tmp_path, make_image_bytes, manifest, named) -> None:  # type: ignore[no-untyped-def]
    folder = _folder(tmp_path, make_image_bytes, manifest)
    with pytest.raises(ImportRejected) as rejected:
        _import(folder)
    assert named in str(rejected.value)
    _nothing_imported()


def _voc(tmp_path: Path, make_image_bytes, xml: bytes) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path / "voc"
    (folder / "Annotations").mkdir(parents=True)
    (folder / "JPEGImages").mkdir()
    (folder / "JPEGImages" / "a.jpg").write_bytes(make_image_bytes(32, 32, fmt="JPEG"))
    (folder / "Annotations" / "a.xml").write_bytes(xml)
    return folder


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<annotation><filename>a.jpg</filename><object><name>&lol9;</name></object></annotation>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<annotation><filename>a.jpg</filename><object><name>&x;</name>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>
<object><name>dog</name></object></annotation>"""
VOC_OK = (b"<annotation><filename>a.jpg</filename><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
          b"<xmax>9</xmax><ymax>9</ymax></bndbox></object>%s</annotation>")  # fmt: skip


@pytest.mark.parametrize(
    ("xml", "named"),
    [
        (BILLION_LAUGHS, "a.xml"),
        (XXE, "a.xml"),
        (b"<annotation><filename>a.jpg</filename><object><name>cat</name>", "not well-formed"),
        (VOC_OK % b"<object><name>dog</name><bndbox><xmin>x</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>",
         "not a number"),
        (VOC_OK % b"<object><name>d\xc3\x28g</name></object>", "a.xml"),
        (b"\x00" * 64, "a.xml"),
        (b"<annotation><filename>../../etc/passwd</filename></annotation>", "not found"),
    ],
    ids=["billion-laughs", "xxe", "truncated", "nan-coordinate", "bad-utf8", "nul-bytes", "path-traversal"],
)  # fmt: skip
def test_malformed_voc_is_named_and_nothing_lands(tmp_path, make_image_bytes, xml, named) -> None:  # type: ignore[no-untyped-def]
    folder = _voc(tmp_path, make_image_bytes, xml)
    with pytest.raises(ImportRejected) as rejected:
        _import(folder)
    assert named in str(rejected.value)
    assert "root:" not in str(rejected.value)  # never the content of a local file
    _nothing_imported()


def test_admin_zip_with_nul_in_manifest_is_a_clear_error(staff_client, make_image_bytes) -> None:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("set/a.png", make_image_bytes(32, 32))
        archive.writestr("set/manifest.csv", HEADER + "a.png,c\x00at,\n")
    buffer.seek(0)
    buffer.name = "set.zip"
    response = staff_client.post("/admin/studies/imageset/import-zip/", {"name": "zipped", "archive": buffer,
                                                                       "only_two_categories": ""}, follow=True)  # fmt: skip
    assert response.status_code == 200
    assert "nothing was imported" in response.content.decode()
    _nothing_imported()


def test_non_staff_user_gets_no_results_and_no_exports(client, django_user_model) -> None:  # type: ignore[no-untyped-def]
    study = make_worker_study()
    user = django_user_model.objects.create_user("worker", password="pw-for-tests-only")
    client.force_login(user)
    for path in (f"/results/{study.slug}/", f"/results/{study.slug}/export/tidy.csv",
                 f"/results/{study.slug}/export/summary.csv", f"/results/{study.slug}/pack.zip",
                 f"/results/{study.slug}/plot/accuracy.png"):  # fmt: skip
        response = client.get(path)
        assert response.status_code in (302, 403), path
        assert b"worker_hash" not in response.content
    response = client.post("/admin/studies/study/", {"action": "export_tidy_csv", "_selected_action": [study.pk]})
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
