import pytest

from mixnet_deploy.batching import BatchProfile, parse_batch_profile
from mixnet_deploy.errors import InputError


@pytest.mark.parametrize("text,expected", [("1:8:32", (1, 8, 32)), ("4", (4, 4, 4)), (" 1:1:1 ", (1, 1, 1))])
def test_parse(text, expected):
    assert parse_batch_profile(text) == BatchProfile(*expected)


@pytest.mark.parametrize("text", ["8:1:32", "0:1:2", "1:8", "1:8:32:64", "a:b:c", "", "-1:2:3", "1:2:99999"])
def test_parse_rejects(text):
    with pytest.raises(InputError, match="--batch"):
        parse_batch_profile(text)


def test_shapes():
    assert BatchProfile(1, 8, 16).shapes(224)["max"] == (16, 3, 224, 224)
    assert BatchProfile(2, 2, 2).is_static and not BatchProfile().is_static
