"""The torchvision datasets the grader knows, in one table: for each class its file format, its
files, the folder under ``root`` where torchvision looks for them, its class names and the
checksums of the official files where known. A rubric's ``dataset:`` section names one
(``DataChoice``); image shape and class count are read from the files, never typed here.

Adding a dataset of a known format is one ``DatasetKind`` line here and one name in the probe's
table (probe/runtime.py ``REDIRECTED``).
"""

from __future__ import annotations

from dataclasses import dataclass

IDX, CIFAR = "idx", "cifar"  # the file formats: IDX (MNIST's family), CIFAR's python batches
SHA256, MD5 = "sha256", "md5"

# The IDX files the trusted side and the probe read, whatever the dataset's own format (CIFAR's
# batches are converted into them once, when the data is prepared): images (count, rows, columns
# or count, channels, rows, columns) and labels.
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


@dataclass(frozen=True, kw_only=True)
class DatasetKind:
    """One torchvision dataset class as the grader prepares it."""

    name: str  # the torchvision class: FashionMNIST, CIFAR10
    format: str  # IDX or CIFAR
    folder: str  # below torchvision's root, where the class reads its files
    train: tuple[str, ...]  # the training split's files (IDX: images, labels; CIFAR: batches)
    test: tuple[str, ...]  # the test split's (IDX: images, labels; CIFAR: the test batch)
    meta: str | None = None  # CIFAR's batches.meta (the class names)
    classes: tuple[str, ...] = ()  # the official class names
    test_count: int = 10_000  # images in the official test split (each known dataset's: 10,000)
    # file -> (algorithm, hex digest) of the official file, uncompressed, where known
    checksums: tuple[tuple[str, tuple[str, str]], ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        """Every file torchvision reads, in order."""
        return self.train + self.test + ((self.meta,) if self.meta else ())

    @property
    def converted(self) -> bool:
        """Whether the grader writes the IDX files (``IDX_FILES``) from the dataset's own."""
        return self.format != IDX

    @property
    def label_files(self) -> tuple[str, ...]:
        """The files that hold the test labels (masked from a kernel that must not read them)."""
        return (TEST_LABELS,) + (self.test if self.converted else ())


def _idx(name: str, classes: tuple[str, ...], **more: object) -> DatasetKind:
    return DatasetKind(
        name=name,
        format=IDX,
        folder=f"{name}/raw",
        train=(TRAIN_IMAGES, TRAIN_LABELS),
        test=(TEST_IMAGES, TEST_LABELS),
        classes=classes,
        **more,  # type: ignore[arg-type]
    )


def _digests(algorithm: str, digests: dict[str, str]) -> tuple[tuple[str, tuple[str, str]], ...]:
    return tuple((name, (algorithm, value)) for name, value in digests.items())


# sha256 of FashionMNIST's uncompressed IDX files (the same bytes whatever the .gz around them)
_FASHION_MNIST_SHA256 = {
    TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_DIGITS = tuple(str(d) for d in range(10))
KINDS: dict[str, DatasetKind] = {
    kind.name: kind
    for kind in (
        _idx(
            "FashionMNIST",
            (
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            checksums=_digests(SHA256, _FASHION_MNIST_SHA256),
        ),
        # torchvision publishes only its .gz files' md5s: a rubric gives these files' sha256
        _idx("MNIST", _DIGITS),
        _idx("KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
        DatasetKind(
            name="CIFAR10",
            format=CIFAR,
            folder="cifar-10-batches-py",
            train=tuple(f"data_batch_{k}" for k in range(1, 6)),
            test=("test_batch",),
            meta="batches.meta",
            classes=(
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ),
            # torchvision's md5s of the extracted files (its CIFAR10.train_list, test_list, meta)
            checksums=_digests(
                MD5,
                {
                    "data_batch_1": "c99cafc152244af753f735de768cd75f",
                    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                    "data_batch_4": "634d18415352ddfa80567beed471001a",
                    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                    "test_batch": "40351d587109b95175f43aff81a1287e",
                    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
                },
            ),
        ),
    )
}
DEFAULT = "FashionMNIST"  # a rubric without a dataset section (HW3's)


@dataclass(frozen=True, kw_only=True)
class DataChoice:
    """A rubric's ``dataset:``: the torchvision class, the TA's own sha256 of some of its files
    (over the table's), and class names over the data's."""

    name: str = DEFAULT
    files: tuple[tuple[str, str], ...] = ()  # file -> sha256
    classes: tuple[str, ...] = ()

    @property
    def kind(self) -> DatasetKind:
        return KINDS[self.name]

    def checksums(self) -> dict[str, tuple[str, str]]:
        """Each file's expected (algorithm, digest): the rubric's, else the table's."""
        return {**dict(self.kind.checksums), **{f: (SHA256, d) for f, d in self.files}}

    def class_names(self) -> tuple[str, ...]:
        """The names the pages show without the data at hand: the rubric's, else the table's."""
        return self.classes or self.kind.classes


FASHION_MNIST = DataChoice()
