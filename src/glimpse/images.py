"""Reading user images: any file PIL can open, any mode, EXIF orientation applied."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, InputWarning

if TYPE_CHECKING:
    import torch

ImageInput = Union[str, Path, Image.Image, np.ndarray, "torch.Tensor"]
MAX_PIXELS = 100_000_000  # 100 megapixels: larger than any camera photo, far below what would exhaust memory


def load_image(source: ImageInput) -> Image.Image:
    """Return `source` as an upright RGB image.

    EXIF rotation is applied so the map lines up with what the user sees; grayscale, palette and
    RGBA images become RGB (alpha composited on white, as viewers show it). An image of more than
    `MAX_PIXELS` pixels is refused before its pixels are decoded (set `glimpse.images.MAX_PIXELS` to
    take larger ones).
    """
    if isinstance(source, Image.Image):
        image = _checked_size(source, "the image")
    elif isinstance(source, np.ndarray):
        image = _checked_size(_from_array(source), "the image array")
    elif type(source).__module__.startswith("torch") and hasattr(source, "detach"):
        image = _checked_size(_from_array(_channels_last(source.detach().cpu().numpy())), "the image tensor")
    elif not isinstance(source, (str, Path)):
        raise ImageError(f"an image is a file path, a PIL image, a numpy array (height x width [x 3 or 4]) or a "
                         f"torch tensor (channels x height x width); got {type(source).__name__}")
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError(f"image file not found: {path}")
        if not path.is_file():
            raise ImageError(f"image path is not a file: {path}")
        try:
            image = _checked_size(Image.open(path), str(path))
            image.load()
        except UnidentifiedImageError:
            raise ImageError(f"not an image file (PIL cannot identify it): {path}") from None
        except Image.DecompressionBombError:
            raise ImageError(f"{path} declares more pixels than is safe to decode (over "
                             f"{2 * Image.MAX_IMAGE_PIXELS:,}): a decompression bomb, or a far larger image than a "
                             "model takes; shrink it first") from None
        except OSError as exc:
            raise ImageError(f"cannot read image {path}: {exc}") from None
    if getattr(image, "n_frames", 1) > 1:
        warnings.warn(f"{source if isinstance(source, (str, Path)) else 'the image'} has {image.n_frames} frames; "
                      "the first is explained", InputWarning, stacklevel=2)
    return _to_rgb(ImageOps.exif_transpose(image))


def _checked_size(image: Image.Image, name: str) -> Image.Image:
    if image.width * image.height > MAX_PIXELS:
        raise ImageError(f"{name} has {image.width} x {image.height} pixels, more than glimpse takes "
                         f"({MAX_PIXELS:,}: a model sees a few megapixels at most); shrink it, or raise "
                         "glimpse.images.MAX_PIXELS")
    return image


def _channels_last(array: np.ndarray) -> np.ndarray:
    """A tensor image as torchvision writes it, channels x height x width, turned height x width x channels."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (3, 4):
        array = array.transpose(1, 2, 0)
    return array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array


def _from_array(array: np.ndarray) -> Image.Image:
    """A height x width (grey) or height x width x 3 / 4 array: uint8 as it is, floats in [0, 1] scaled to 255."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or 0 in array.shape:
        raise ImageError(f"an image array is height x width or height x width x 3 (or 4), got shape {array.shape}")
    if array.dtype == np.uint8:
        return Image.fromarray(array)
    if np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all() and 0 <= array.min() and array.max() <= 1:
        return Image.fromarray((array * 255).round().astype(np.uint8))
    raise ImageError(f"an image array is uint8, or floats in [0, 1]; got {array.dtype} from {array.min()} to {array.max()}")


# Modes of more than 8 bits a channel, which PIL's convert("RGB") clips at 255 (a 16-bit scan turns white).
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")


def _rescaled(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image as RGB by its own range (lowest value black, highest white)."""
    values = np.asarray(image.convert("F"), dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    warnings.warn(f"a {image.mode} image was converted to 8-bit RGB by its range {low:g}..{high:g}", InputWarning,
                  stacklevel=3)
    scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    return Image.fromarray(scaled.round().astype(np.uint8)).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in WIDE_MODES:
        return _rescaled(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def check_image(source: ImageInput) -> None:
    """An `ImageError` now if `source` cannot be read, before the work that needs it (loading a model);
    what reading it warns of is left to `explain`, which notes it on the result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        load_image(source)
