import pytest

from generator.classes import ClassSpecError, all_classes, imagenet_class, parse_class_spec


def test_classes_come_from_timm_with_unique_index_slugs():
    classes = all_classes()
    assert len(classes) == 1000
    assert imagenet_class(967).name == "espresso" and imagenet_class(967).wnid == "n07920052"
    names = [c.name for c in classes]
    assert len(set(names)) < 1000  # two classes are called 'crane'...
    assert len({c.slug for c in classes}) == 1000  # ...but slugs never collide


@pytest.mark.parametrize("spec, expected", [
    ("all", list(range(1000))),
    ("0-3", [0, 1, 2, 3]),
    ("281,967", [281, 967]),
    ("n02123045", [281]),
    ("967, 0-1 ,n02123045,967", [0, 1, 281, 967]),
    ("espresso,tabby", [281, 967]),  # 'tabby' is a synonym of 'tabby, tabby cat'
    ("Golden_Retriever, tiger cat", [207, 282]),  # case, underscores and spaces aside
    ("espresso,967", [967]),
])
def test_spec_parser(spec, expected):
    assert parse_class_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("1000", "out of range"),
    ("5-2", "runs backwards"),
    ("n99999999", "unknown WordNet id"),
    ("crane", r"class name 'crane' is ambiguous: 134 \(crane\), 517 \(crane\)"),
    ("espreso", r"unknown class name 'espreso' \(did you mean 'espresso' = 967\?\)"),
    ("retriever", "did you mean 'flat-coated retriever' = 205"),
    ("zzzz", "unknown class name 'zzzz' \\(names are the ImageNet-1k ones"),
    ("0-9:2", "cannot read '0-9:2'"),
    ("1,,2", "empty item"),
    ("", "empty class SPEC"),
])
def test_spec_errors(spec, message):
    with pytest.raises(ClassSpecError, match=message):
        parse_class_spec(spec)
