"""Reading user images: any file PIL can open, any mode, EXIF orientation applied."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageInput = Union[str, Path, Image.Image]


def load_image(source: ImageInput) -> Image.Image:
    """Return `source` as an upright RGB image.

    EXIF rotation is applied so the map lines up with what the user sees; grayscale, palette and
    RGBA images become RGB (alpha composited on white, as viewers show it).
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError(f"image file not found: {path}")
        if not path.is_file():
            raise ImageError(f"image path is not a file: {path}")
        try:
            image = Image.open(path)
            image.load()
        except UnidentifiedImageError:
            raise ImageError(f"not an image file (PIL cannot identify it): {path}") from None
        except Image.DecompressionBombError:
            raise ImageError(f"{path} declares more pixels than is safe to decode (over "
                             f"{2 * Image.MAX_IMAGE_PIXELS:,}): a decompression bomb, or a far larger image than a "
                             "model takes; shrink it first") from None
        except OSError as exc:
            raise ImageError(f"cannot read image {path}: {exc}") from None
    return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")
