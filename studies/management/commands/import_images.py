"""``manage.py import_images NAME FOLDER``: import an image folder (CSV manifest) or a VOC tree."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.services.importers import ImportRejected, image_set_import, records_from_folder


class Command(BaseCommand):
    help = "Import images with categories and boxes (manifest.csv folder or PASCAL VOC) into a new image set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="slug of the new image set")
        parser.add_argument("folder", type=Path)
        parser.add_argument("--two-categories", action="store_true", help="keep only images with exactly 2 categories")
        parser.add_argument("--categories", default="", help="allowed categories separated by ';'")

    def handle(self, *args: object, **options: object) -> None:
        folder = Path(str(options["folder"]))
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        categories = [c.strip() for c in str(options["categories"]).split(";") if c.strip()] or None
        try:
            records, source = records_from_folder(folder=folder)
            image_set = image_set_import(
                name=str(options["name"]),
                records=records,
                source=source,
                categories=categories,
                require_categories=2 if options["two_categories"] else None,
            )
        except ImportRejected as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"imported {image_set.images.count()} images into {image_set.name}"))
