"""Writes Fashion-MNIST's test set twice, as the same images in two layouts:

  OUT/folder/{train,test}/CLASS/NNNNN.png   28x28 greyscale PNGs, ImageFolder layout
  OUT/idx/{train,t10k}-{images-idx3,labels-idx1}-ubyte   the same images as IDX files

The first 8,000 test images make the training split and the last 2,000 the test split.
Class folders are named "0-t-shirt" .. "9-ankle-boot", so sorted names give the labels;
files are named by their index, and the IDX files list the images in the folder order
(class by class, by file name), so the two readers see one sequence of images.

Usage: python3 experiments/fmnist_folder_tree.py FASHION_MNIST_DIR OUT  (needs Pillow)
"""
import gzip
import os
import struct
import sys

from PIL import Image

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
           "sneaker", "bag", "ankle-boot"]
TRAIN = 8000


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


def find(src, name):
    for candidate in (os.path.join(src, name), os.path.join(src, name + ".gz")):
        if os.path.exists(candidate):
            return candidate
    raise SystemExit(f"{src}: no {name}[.gz] (apt-get install dataset-fashion-mnist)")


def main(src, out):
    images = read(find(src, "t10k-images-idx3-ubyte"))
    labels = read(find(src, "t10k-labels-idx1-ubyte"))
    n, rows, cols = struct.unpack(">III", images[4:16])
    assert struct.unpack(">I", labels[4:8])[0] == n and (rows, cols) == (28, 28)
    pixels = images[16:]
    for split, indices in (("train", range(TRAIN)), ("test", range(TRAIN, n))):
        by_class = {}
        for i in indices:
            by_class.setdefault(labels[8 + i], []).append(i)
        order = []
        for label in sorted(by_class):
            folder = os.path.join(out, "folder", split, f"{label}-{CLASSES[label]}")
            os.makedirs(folder, exist_ok=True)
            for i in by_class[label]:
                img = Image.frombytes("L", (28, 28), pixels[i * 784:(i + 1) * 784])
                img.save(os.path.join(folder, f"{i:05}.png"))
                order.append(i)
        prefix = "train" if split == "train" else "t10k"
        os.makedirs(os.path.join(out, "idx"), exist_ok=True)
        with open(os.path.join(out, "idx", f"{prefix}-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 0x803, len(order), 28, 28))
            f.write(b"".join(pixels[i * 784:(i + 1) * 784] for i in order))
        with open(os.path.join(out, "idx", f"{prefix}-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 0x801, len(order)))
            f.write(bytes(labels[8 + i] for i in order))
        print(f"{split}: {len(order)} images")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
