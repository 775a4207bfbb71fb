"""Class names files and class targets by number or name, at ImageNet's 1,000 classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelguard.data.class_names import nearest_class_names, read_class_names, resolve_class
from pixelguard.errors import ConfigError

IMAGENET = Path(__file__).resolve().parents[2] / "benchmarks" / "imagenet_classes.txt"


@pytest.fixture(scope="module")
def imagenet() -> list[str]:
    return read_class_names(IMAGENET)


def test_the_imagenet_file_has_one_name_per_class(imagenet: list[str]) -> None:
    assert len(imagenet) == 1000 and len(set(imagenet)) == 1000
    assert imagenet[948] == "Granny Smith" and imagenet[0] == "tench"


def test_names_by_number_and_by_name(imagenet: list[str]) -> None:
    assert resolve_class("Granny Smith", imagenet) == 948
    assert resolve_class("948", imagenet, 1000) == 948
    assert resolve_class(948, None, 1000) == 948
    assert resolve_class(" +7 ", None, 10) == 7
    assert resolve_class("granny smith", imagenet) == 948  # the only name but for case


def test_a_name_that_differs_only_in_case_from_two_names_is_refused(imagenet: list[str]) -> None:
    assert resolve_class("cardigan", imagenet) == 474  # exact match wins
    with pytest.raises(ConfigError, match="'Cardigan'.*'cardigan'"):
        resolve_class("CARDIGAN", imagenet)


def test_an_unknown_name_offers_the_nearest_names_on_one_line(imagenet: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_class("granny", imagenet, 1000, what="--target")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--target must be a class number or name, got 'granny'; nearest")
    assert "948 'Granny Smith'" in message and message.endswith("class numbers are 0-999")
    assert message.count("'") <= 2 * 6  # the text and at most five names, not all 1,000
    with pytest.raises(ConfigError, match="1 'goldfish'"):
        resolve_class("gold fish", imagenet)
    with pytest.raises(ConfigError, match="no class name is close"):
        resolve_class("qqqqzzzz", imagenet)


def test_nearest_names_put_names_containing_the_text_first() -> None:
    names = ["Granny Smith", "grand piano", "banana", "pineapple", "apple pie"]
    assert nearest_class_names("granny", names)[0] == "Granny Smith"
    assert nearest_class_names("APPLE", names)[:2] == ["apple pie", "pineapple"]
    assert nearest_class_names("bananna", names) == ["banana"]
    assert nearest_class_names("", names) == []
    assert len(nearest_class_names("a", [f"a{i}" for i in range(1000)])) == 5


@pytest.mark.parametrize("value", ["1000", "-1", 1000, -3])
def test_numbers_outside_the_classes_are_refused(imagenet: list[str], value: str | int) -> None:
    with pytest.raises(
        ConfigError, match=r"^target class -?\d+ is out of range: class numbers are 0-999$"
    ):
        resolve_class(value, imagenet)
    with pytest.raises(ConfigError, match="0-999"):
        resolve_class(value, None, 1000)


def test_names_without_a_names_list_ask_for_one() -> None:
    with pytest.raises(ConfigError, match="no class names are known.*--class-names"):
        resolve_class("Granny Smith", None, 1000)
    assert resolve_class("12", None, None) == 12  # nothing to check the number against


def test_names_file_line_numbers_are_class_numbers(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("\ufeffcat\n  dog  \nbird\n\n\n", encoding="utf-8")
    assert read_class_names(path) == ["cat", "dog", "bird"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cat\n\ndog\n", "line 2 is blank"),
        ("cat\ndog\ncat\n", "'cat' twice \\(classes 0 and 2\\)"),
        ("\n\n", "names no class"),
    ],
)
def test_bad_names_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "names.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        read_class_names(path)
    assert "\n" not in str(info.value)


def test_an_unreadable_names_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_class_names(tmp_path / "absent.txt", what="--class-names")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ConfigError, match="cannot read"):
        read_class_names(tmp_path / "binary.txt")


def test_a_name_among_fewer_names_than_the_model_has_classes_asks_for_the_models_names() -> None:
    with pytest.raises(
        ConfigError,
        match=r"data names 1 class\(es\) \('Egyptian cat'\) but the model has 1,000: give the model's names with --class-names",
    ):
        resolve_class("Granny Smith", ["Egyptian cat"], num_classes=1000)
