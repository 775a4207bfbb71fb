"""Options shared by several commands, and turning them into library calls.

Every option is declared once here as an ``Annotated`` alias; commands use the
aliases, so ``attack`` and ``train`` spell and document the data options alike.

The library (and so torch) is imported where an option is turned into a library call,
not at import: ``pixelguard --help`` builds every command's options from this module.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from pixelguard.defaults import DEFAULT_MAX_MEMORY
from pixelguard.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pixelguard.data import Dataset
    from pixelguard.models.base import Classifier

logger = logging.getLogger(__name__)

DATA_PANEL = "Data options"
MODEL_PANEL = "Model options"
ATTACK_PANEL = "Attack options"
OUTPUT_PANEL = "Output options"
RUN_PANEL = "Run options"

# --- data ---------------------------------------------------------------------------
DataSpec = Annotated[
    str,
    typer.Option(
        "--data",
        "-d",
        help="'digits' (built in), a .npy/.npz file, a folder or .tar of class folders, "
        "MNIST IDX files or CIFAR-10 batches.",
        rich_help_panel=DATA_PANEL,
    ),
]
Labels = Annotated[
    str | None,
    typer.Option(help="A .npy file of integer labels for .npy images.", rich_help_panel=DATA_PANEL),
]
DataLayout = Annotated[
    str,
    typer.Option(
        "--data-layout",
        help="Layout of .npy/.npz images: auto, nchw or nhwc.",
        rich_help_panel=DATA_PANEL,
    ),
]
ClassNames = Annotated[
    str | None,
    typer.Option(
        "--class-names",
        help="The model's class order: names comma-separated, or a text file with one name "
        "per line; image folders are otherwise mapped to classes alphabetically.",
        rich_help_panel=DATA_PANEL,
    ),
]
Limit = Annotated[
    int | None,
    typer.Option(
        help="Use at most N images of the split, drawn at random with --seed (default: all).",
        rich_help_panel=DATA_PANEL,
    ),
]
ValueRange = Annotated[
    str,
    typer.Option(
        help="Pixel range of .npy/.npz images: auto, 0-1 or 0-255.", rich_help_panel=DATA_PANEL
    ),
]
Split = Annotated[
    str,
    typer.Option(
        help="Split of the data to use: test, train or all (where the data has splits).",
        rich_help_panel=DATA_PANEL,
    ),
]

# --- model --------------------------------------------------------------------------
ModelSpec = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="A .pt/.pth (pixelguard checkpoint or TorchScript), .onnx, .keras/.h5, a "
        "TensorFlow SavedModel folder, .pkl/.joblib, file.py:factory, or an http(s):// endpoint.",
        rich_help_panel=MODEL_PANEL,
    ),
]
InputShape = Annotated[
    str | None,
    typer.Option(
        help="C,H,W of the images the model takes (default: read from checkpoints, ONNX and "
        "Keras files, else the data's image size).",
        rich_help_panel=MODEL_PANEL,
    ),
]
Layout = Annotated[
    str | None,
    typer.Option(
        help="Layout the model wants: nchw or nhwc (default: read from Keras files, else nchw).",
        rich_help_panel=MODEL_PANEL,
    ),
]
Scale = Annotated[
    float | None,
    typer.Option(
        help="Multiply [0, 1] pixels by this first (255 for 0..255 models).",
        rich_help_panel=MODEL_PANEL,
    ),
]
Mean = Annotated[
    str | None,
    typer.Option(
        help="Per-channel mean to subtract after scaling, e.g. 0.485,0.456,0.406.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Std = Annotated[
    str | None,
    typer.Option(
        help="Per-channel std to divide by after subtracting the mean.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Output = Annotated[
    str | None,
    typer.Option(
        help="What the model returns: logits, probabilities or labels (default: detected).",
        rich_help_panel=MODEL_PANEL,
    ),
]
BatchSize = Annotated[
    str,
    typer.Option(
        help="Most images per model call, or auto: the fastest, measured once per model and "
        "machine (a few seconds at most) and cached in ~/.cache/pixelguard ($PIXELGUARD_CACHE). "
        "Endpoints use their config's.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Device = Annotated[
    str,
    typer.Option(
        help="Where torch, Keras and ONNX models run: auto (the GPU when torch sees one, "
        "else the CPU), cpu, cuda or cuda:N. ONNX needs onnxruntime-gpu for cuda.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Threads = Annotated[
    str,
    typer.Option(
        help="CPU threads for torch and ONNX Runtime models, or auto: with --batch-size auto, "
        "a torch model on the CPU is timed at 1 thread and at torch's default (one per core) "
        "and the faster kept (on a machine busy with other work, 1 can be several times "
        "faster); otherwise torch's default.",
        rich_help_panel=MODEL_PANEL,
    ),
]
MaxMemory = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        help="Memory one model call may use for images and activations, and an attack for "
        f"candidate images, e.g. 512M, 2G, 1.5GiB (default {DEFAULT_MAX_MEMORY / 2**30:g}G); "
        "it caps the batch size.",
        rich_help_panel=MODEL_PANEL,
    ),
]
TrustPickle = Annotated[
    bool,
    typer.Option(
        "--trust-pickle",
        help="Allow pickle/joblib model files; loading them runs code from the file.",
        rich_help_panel=MODEL_PANEL,
    ),
]
HttpConfig = Annotated[
    Path | None,
    typer.Option(help="Endpoint configuration file (http:// models).", rich_help_panel=MODEL_PANEL),
]
DefenseSpec = Annotated[
    str | None,
    typer.Option(
        "--defense",
        help="Put the model behind a preprocessing defense, attacked adaptively: "
        "median:3, outlier-removal:3, bit-depth:4, jpeg:75 or random-noise:0.1 "
        "(more settings as ,key=value).",
        rich_help_panel=MODEL_PANEL,
    ),
]

# --- output -------------------------------------------------------------------------
CHECKPOINT_FOLDER = "checkpoint"
"""Sub-folder of ``--out`` holding a command's resumable state."""

Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Hide progress bars.", rich_help_panel=OUTPUT_PANEL),
]
JsonOutput = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the summary as JSON on stdout.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]


def check_output_folder(path: Path, flag: str = "--out") -> Path:
    """``path`` if it is a folder or does not exist yet, before any work starts.

    Raises:
        ConfigError: ``path`` names an existing file (say, ``--out model.pt``).
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{flag} {path} is an existing file; {flag} names a folder for the results "
            f"(e.g. {flag} {path.with_suffix('')}-run)"
        )
    return path


def parse_ints(text: str, what: str) -> list[int]:
    """``"1,3,5"`` -> ``[1, 3, 5]``; ConfigError unless positive integers."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"{what} must be comma-separated positive integers, got {text!r}")
    return [int(p) for p in parts]


F = TypeVar("F", bound=Callable[..., Any])


def with_options(
    *,
    defaults: Mapping[str, Any] | None = None,
    exclude: tuple[str, ...] = (),
    **groups: type,
) -> Callable[[F], F]:
    """Give a command every field of each options dataclass as an option, declared once.

    ``@with_options(model_options=ModelOptions, data_options=DataOptions)`` on a
    command with parameters ``model_options`` and ``data_options`` replaces those two
    in its signature (what typer reads) by one option per field (typed by the
    field's ``Annotated`` alias), and calls the command with the records built from
    them. ``defaults`` changes a field's default for this command (``{"split":
    "train"}``); ``exclude`` names fields the command does not offer (they keep
    their defaults).
    """
    overrides = dict(defaults or {})

    def decorate(command: F) -> F:
        hints = typing.get_type_hints(command, include_extras=True)
        signature = inspect.signature(command)
        parameters = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.name not in groups
        ]
        names: dict[str, list[str]] = {}
        for group, cls in groups.items():
            field_hints = typing.get_type_hints(cls, include_extras=True)
            offered = [f for f in dataclasses.fields(cls) if f.name not in exclude]
            names[group] = [f.name for f in offered]
            parameters += [
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=overrides.get(f.name, f.default),
                    annotation=field_hints[f.name],
                )
                for f in offered
            ]
        unknown = (set(overrides) | set(exclude)) - {
            f.name for cls in groups.values() for f in dataclasses.fields(cls)
        }
        if unknown:
            raise TypeError(f"with_options: no option {', '.join(sorted(unknown))}")

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            for group, cls in groups.items():
                kwargs[group] = cls(**{name: kwargs.pop(name) for name in names[group]})
            return command(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return cast(F, wrapper)

    return decorate


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The model options of a command, as given (None: not set).

    Each field is one command-line option (its type is the option's alias), so
    :func:`with_options` gives a command all of them at once.
    """

    input_shape: InputShape = None
    layout: Layout = None
    scale: Scale = None
    mean: Mean = None
    std: Std = None
    output: Output = None
    batch_size: BatchSize = "auto"
    trust_pickle: TrustPickle = False
    http_config: HttpConfig = None
    device: Device = "auto"
    threads: Threads = "auto"
    max_memory: MaxMemory = None

    def load(self, spec: str, data_shape: tuple[int, int, int] | None = None) -> Classifier:
        """Load the model ``spec`` with these options.

        ``data_shape`` is the image shape of the data to classify: the input size of a
        model that records none, unless ``--input-shape`` says otherwise.
        """
        from pixelguard.models.base import parse_shape
        from pixelguard.models.loader import load_model, parse_batch_size

        return load_model(
            spec,
            input_shape=parse_shape(self.input_shape, "--input-shape"),
            layout=self.layout,
            scale=self.scale,
            mean=self.mean,
            std=self.std,
            output=self.output,
            batch_size=parse_batch_size(self.batch_size, "--batch-size"),
            trust_pickle=self.trust_pickle,
            http_config=self.http_config,
            device=self.device,
            data_shape=data_shape,
            max_memory=self.max_memory,
            threads=self.threads,
        )

    def given(self) -> dict[str, Any]:
        """The options the user set, for reports."""
        defaults = ModelOptions()
        return {
            f.name: str(value) if isinstance(value, Path) else value
            for f in dataclasses.fields(self)
            if (value := getattr(self, f.name)) != getattr(defaults, f.name)
        }


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """The data options of a command (one command-line option per field, as
    :class:`ModelOptions`)."""

    labels: Labels = None
    data_layout: DataLayout = "auto"
    value_range: ValueRange = "auto"
    split: Split = "test"
    class_names: ClassNames = None

    def load(self, spec: str, *, split: str | None = None) -> Dataset:
        """Load ``spec`` with these options (``split`` overrides the option)."""
        from pixelguard.data import load_data

        dataset = load_data(
            spec,
            labels=self.labels,
            layout=self.data_layout,
            value_range=self.value_range,
            split=split or self.split,
        )
        if self.class_names is None:
            return dataset
        return dataset.in_class_order(parse_class_names(self.class_names))

    def separate_test_split(self, spec: str, train: Dataset) -> Dataset | None:
        """The test split of ``spec`` beside ``train``, or None where there is no separate one."""
        try:
            test = self.load(spec, split="test")
        except DataError as exc:
            logger.info("no test split in %s: %s", spec, exc)
            return None
        return None if test.source == train.source else test


def parse_class_names(text: str) -> list[str]:
    """``--class-names``: a text file with one name per line, or names comma-separated.

    Raises:
        ConfigError: an unreadable file, a blank line between names, or no names.
    """
    from pixelguard.data.class_names import read_class_names

    if Path(text).expanduser().is_file():
        return read_class_names(text, what="--class-names")
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"--class-names names no class: {text!r}")
    return names


def apply_defense(model: Classifier, spec: str | None) -> tuple[Classifier, dict[str, Any] | None]:
    """``model`` behind the ``--defense`` spec, and the defense's description (None: no defense)."""
    if spec is None:
        return model, None
    from pixelguard.defenses.spec import parse_defense

    wrap, description = parse_defense(spec)
    return wrap(model), description


def load_classifier(
    spec: str, options: ModelOptions, dataset: Dataset, defense: str | None = None
) -> tuple[Classifier, dict[str, Any] | None]:
    """Load the model for ``dataset`` (its image size where the model records none), say
    what the adapter detected, and put it behind the ``--defense`` spec, if any."""
    loaded = options.load(spec, dataset.image_shape)
    echo_detected(loaded)
    return apply_defense(loaded, defense)


def echo_detected(model: Classifier) -> None:
    """Say what the adapter read from the model file itself (layout, output kind, ...)."""
    detected = getattr(model, "detected", None)
    if detected:
        typer.echo("model   " + "; ".join(f"{key} {value}" for key, value in detected.items()))


def model_info(
    spec: str, model: Classifier, options: ModelOptions, defense: dict[str, Any] | None = None
) -> dict[str, Any]:
    """How the model was given (and the defense it sits behind, if any), and the batch
    size its calls ran at (attacks that fill calls depend on it), for reports."""
    from pixelguard.models.base import preferred_batch_size

    info = {
        "spec": spec,
        "input_shape": list(model.input_shape),
        "batch_size": preferred_batch_size(model),
        "options": options.given(),
    }
    return info if defense is None else {**info, "defense": defense}


def data_info(spec: str, dataset: Dataset, options: DataOptions) -> dict[str, Any]:
    """How the data was given and what it holds, for reports.

    For a sample (``--limit``), ``indices`` is each image's position in the split as
    loaded: per-image ``index`` fields count within the sample, this maps them back.
    """
    sampled = {} if dataset.index is None else {"indices": dataset.index.tolist()}
    return {
        "spec": spec,
        "source": dataset.source,
        "split": options.split,
        "labels": options.labels,
        "layout": options.data_layout,
        "value_range": options.value_range,
        "n_images": len(dataset),
        "image_shape": list(dataset.image_shape),
        "class_names": dataset.class_names,
        **sampled,
    }


ATTACK_HELP = "Attack to run; `pixelguard attacks` lists them all."
"""Help text for ``--attack``. It names no registered attack: listing them would import
every attack (and torch) whenever any command's help is shown."""

AttackName = Annotated[
    str, typer.Option("--attack", "-a", help=ATTACK_HELP, rich_help_panel=ATTACK_PANEL)
]
QueryBudget = Annotated[
    int | None, typer.Option(help="Most model queries per image.", rich_help_panel=ATTACK_PANEL)
]
AttackParams = Annotated[
    list[str] | None,
    typer.Option(
        help="Any other attack field as key=value, e.g. --param steps=300 (repeatable).",
        rich_help_panel=ATTACK_PANEL,
    ),
]

ARCH_NAMES = ("mlp", "small-cnn")
"""The architectures of :mod:`pixelguard.models.zoo`, for help text without importing torch
(``tests/test_imports.py`` checks that they are :func:`~pixelguard.models.zoo.list_archs`)."""

ARCH_HELP = f"Architecture: {', '.join(ARCH_NAMES)}."

DETECTOR_NAMES = ("feature-squeezing", "isolated-pixel", "strip")
"""The detectors of :mod:`pixelguard.defenses.detect`, for help text without importing
torch (checked against :func:`~pixelguard.defenses.detect.list_detectors` likewise)."""


def resolve_target(
    text: str | None, class_names: list[str] | None, num_classes: int | None = None
) -> int | None:
    """A ``--target`` given as a class number or a class name (None: untargeted).

    Names are matched exactly, then ignoring case; an unknown name's one-line error
    offers the nearest few names, not all 1,000 of an ImageNet model. A number must
    be below ``num_classes`` (the model's; else the number of ``class_names``).

    Raises:
        ConfigError: a number out of range, or a name that is no known class name.
    """
    if text is None:
        return None
    from pixelguard.data.class_names import resolve_class

    return resolve_class(text, class_names, num_classes, what="--target")
