"""A folder of images, one sub-folder per class (optionally inside train/, validation/, ... folders)."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from efficientnetv2_keras.data.sources.base import AUTOTUNE, decode_image, stratified_split
from efficientnetv2_keras.data.sources.in_memory import InMemorySource

# The image formats TensorFlow's decoder reads (tf.io.decode_image): accepted everywhere (image folders,
# tools/predict.py); anything else (.webp, .tiff, .heic) is refused with this list.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_SPLIT_DIRS = ("train", "validation", "val", "test")


def _header_problem(path):
    """Why `path` is not an image we can decode, from its first bytes only (None = looks fine)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    if not head:
        return "empty file"
    if not any(head.startswith(magic) for magic in _MAGIC):
        return "not a JPEG/PNG/GIF/BMP file"
    return None


def _other_files(directory):
    """Files under `directory` that are not in an accepted image format (hidden files aside)."""
    return [os.path.join(folder, f) for folder, _, files in os.walk(directory) for f in sorted(files)
            if not f.startswith(".") and not f.lower().endswith(IMAGE_EXTENSIONS)]


def is_image_file(path):
    """Whether `path` has one of the accepted image extensions (IMAGE_EXTENSIONS), the one list used by
    image folders and tools/predict.py."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def _list_images(directory):
    found = []
    for folder, subfolders, files in os.walk(directory):
        subfolders.sort()
        found.extend(os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
    return found


def _subfolders(path):
    entries = sorted(os.listdir(path))
    return [d for d in entries if os.path.isdir(os.path.join(path, d)) and not d.startswith(".")]


def _split_roots(root):
    """Split name -> folder: train/, validation/, val/, test/ when the root holds only those, else "train"."""
    top = _subfolders(root)
    if top and all(d in _SPLIT_DIRS for d in top):
        return {d: os.path.join(root, d) for d in top}
    return {"train": root}


def _class_names(root, split_roots):
    """The sorted class folder names over every split; at least two."""
    class_names = sorted({c for path in split_roots.values() for c in _subfolders(path)})
    if len(class_names) < 2:
        found = f"only the class folder {class_names[0]!r}" if class_names else "no class sub-folders"
        raise ValueError(
            f"Found {found} in {root!r}; expected at least two, laid out as {root}/<class name>/<image "
            f"files> (or {root}/train/<class name>/..., {root}/validation/<class name>/...)."
        )
    return class_names


def _class_images(folder):
    """The image files of one class folder; none is an error naming what the folder holds instead."""
    files = _list_images(folder)
    if not files:
        others = _other_files(folder)
        raise ValueError(
            f"The class folder {folder!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
            + (f" (it has {len(others)} other file(s), e.g. {os.path.basename(others[0])!r})" if others else "")
            + ": add images, convert them to an accepted format, or remove the folder."
        )
    return files


class ImageFolderSource(InMemorySource):
    """Images in `root/<class>/...` (or `root/<split>/<class>/...` with split folders train, val, ...).

    Classes are the sorted sub-folder names (label = index). Files ending in .jpg/.jpeg/.png/.bmp/.gif
    (any case, in nested folders too) are used; other files are ignored. Grayscale and RGBA images become
    RGB; GIFs give their first frame.

    Corrupt or unreadable files are skipped and counted, never crash a run:
      * at construction, every file's header is checked (first bytes, cheap), and when the folder has at
        most `decode_scan_limit` files (`validate="auto"`) or `validate="decode"`, every file is decoded
        once in parallel with tf.data to catch truncated images too;
      * while training, a file that still fails to decode is dropped (`ignore_errors`, logged).
    The result is in `skipped_files` (list of (path, reason)) and `num_skipped`; a warning is logged.

    Without split folders, everything is "train"; `validation_split=0.1` holds out a seeded stratified
    10 % as "validation".
    """

    skip_decode_errors = True

    def __init__(self, root, *, validate="auto", decode_scan_limit=10_000, validation_split=0.0, seed=0,
                 name=None):  # fmt: skip
        if validate not in ("auto", "decode", "header", None):
            raise ValueError(f"validate must be 'auto', 'decode', 'header' or None, got {validate!r}.")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}.")
        root = os.path.abspath(os.path.expanduser(str(root)))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"Image folder {root!r} does not exist.")
        self.root = root
        self.name = name or f"folder:{root}"
        split_roots = _split_roots(root)
        self.class_names = _class_names(root, split_roots)
        self.num_classes = len(self.class_names)
        paths, labels, splits = self._list_files(split_roots)
        if validate == "auto":
            validate = "decode" if len(paths) <= decode_scan_limit else "header"
        split_of = self._keep_readable(paths, labels, splits, validate)
        self.split_indices = {s: np.flatnonzero(split_of == s) for s in split_roots}
        if validation_split and "validation" not in self.split_indices and "val" not in self.split_indices:
            self._hold_out_validation(validation_split, seed)
        empty = [s for s, idx in self.split_indices.items() if len(idx) == 0]
        if empty:
            raise ValueError(
                f"No readable images for split(s) {empty} under {root!r} (skipped {self.num_skipped})."
            )

    def _list_files(self, split_roots):
        """(paths, labels, split names) of every image file, class by class; a class folder without
        images is an error (the model would learn the class from nothing)."""
        paths, labels, splits = [], [], []
        for split, split_root in split_roots.items():
            for label, class_name in enumerate(self.class_names):
                folder = os.path.join(split_root, class_name)
                if os.path.isdir(folder):
                    files = _class_images(folder)
                    paths += files
                    labels += [label] * len(files)
                    splits += [split] * len(files)
        ignored = [f for split_root in split_roots.values() for f in _other_files(split_root)]
        if ignored:
            logging.warning(
                "%s: ignored %d file(s) that are not in an accepted image format (%s), e.g. %s.",
                self.name, len(ignored), ", ".join(IMAGE_EXTENSIONS), ignored[0],
            )  # fmt: skip
        if not paths:
            raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) under {self.root!r}.")
        return paths, labels, splits

    def _keep_readable(self, paths, labels, splits, mode):
        """Keeps the files that pass the `mode` check as records (the others go to `skipped_files`);
        returns the split name of each record."""
        self.skipped_files = self._scan(paths, mode)
        bad = {path for path, _ in self.skipped_files}
        keep = [i for i, path in enumerate(paths) if path not in bad]
        self.num_skipped = len(self.skipped_files)
        if self.num_skipped:
            examples = ", ".join(f"{os.path.relpath(p, self.root)} ({why})" for p, why in self.skipped_files[:3])
            logging.warning(
                "%s: skipped %d unreadable image file(s), e.g. %s; see .skipped_files.",
                self.name, self.num_skipped, examples,
            )  # fmt: skip
        self._records = np.array([paths[i] for i in keep], dtype=object).astype(str)  # file paths
        self._labels = np.array([labels[i] for i in keep], np.int32)
        return np.array([splits[i] for i in keep], dtype=object)

    def _hold_out_validation(self, fraction, seed):
        """A seeded stratified `fraction` of "train" becomes "validation"."""
        train = self.split_indices["train"]
        rest, held = stratified_split(self._labels[train], int(round(len(train) * fraction)), seed)
        self.split_indices["train"], self.split_indices["validation"] = train[rest], train[held]

    @staticmethod
    def _scan(paths, mode):
        if mode is None:
            return []
        skipped = [(p, why) for p in paths if (why := _header_problem(p))]
        if mode != "decode":
            return skipped
        bad = {p for p, _ in skipped}
        candidates = [p for p in paths if p not in bad]
        if not candidates:
            return skipped
        # Decode everything once, in parallel; the indices that survive `ignore_errors` are readable.
        probe = tf.data.Dataset.from_tensor_slices(candidates).enumerate()
        probe = probe.map(
            lambda i, p: (i, tf.shape(decode_image(tf.io.read_file(p)))[0]), num_parallel_calls=AUTOTUNE
        ).ignore_errors()
        readable = {int(i) for i, _ in probe.as_numpy_iterator()}
        reason = "cannot be decoded (corrupt or truncated)"
        skipped += [(p, reason) for i, p in enumerate(candidates) if i not in readable]
        return skipped

    def decode(self, record):
        path, label = record
        return decode_image(tf.io.read_file(path)), label
