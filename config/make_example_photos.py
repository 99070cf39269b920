"""Fill example/photos with real photos and a few edited copies, for the example config.

The photos are the ones scikit-image ships (public domain / CC0, see skimage.data); the copies
are what people make of photos: a resized one, a cropped one, a flipped one, one with a caption.
Run from the checkout: python config/make_example_photos.py
"""

from pathlib import Path

import cv2
import numpy as np
from skimage import data

TARGET = Path(__file__).resolve().parent.parent / "example" / "photos"


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    photos = {name: cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR)
              for name in ("astronaut", "chelsea", "coffee", "rocket", "retina")}
    copies = {
        "chelsea-small.jpg": cv2.resize(photos["chelsea"], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
        "coffee-cropped.jpg": photos["coffee"][:, : photos["coffee"].shape[1] // 2],
        "astronaut-mirrored.jpg": np.ascontiguousarray(photos["astronaut"][:, ::-1]),
        "rocket-captioned.jpg": cv2.putText(photos["rocket"].copy(), "LAUNCH DAY", (40, 400),
                                            cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 5, cv2.LINE_AA),
    }
    for name, pixels in {**{f"{k}.jpg": v for k, v in photos.items()}, **copies}.items():
        cv2.imwrite(str(TARGET / name), pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"{TARGET}: {len(photos)} photos and {len(copies)} edited copies")


if __name__ == "__main__":
    main()
