"""The request signature (reference §2): the published vectors, then its properties."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.signing import SIGN_METHODS, sign, signing_string

# The first row of the reference table, without sign_method (each vector adds its own).
ITEM_SELLER_GET = {
    "app_key": "12345678",
    "fields": "num_iid,title,nick,price,num",
    "format": "json",
    "method": "taobao.item.seller.get",
    "num_iid": "11223344",
    "session": "test",
    "timestamp": "2016-01-01 12:00:00",
    "v": "2.0",
}
USER_SELLER_GET = {
    "method": "taobao.user.seller.get",
    "timestamp": "2013-05-06 13:52:03",
    "format": "xml",
    "app_key": "test",
    "v": "2.0",
    "fields": "nick",
    "sign_method": "md5",
    "session": "test",
}


@pytest.mark.parametrize(
    ("params", "secret", "method", "expected"),
    [
        pytest.param(
            {**ITEM_SELLER_GET, "sign_method": "md5"},
            "helloworld",
            "md5",
            "66987CB115214E59E6EC978214934FB8",
            id="md5-item-seller-get",
        ),
        pytest.param(
            USER_SELLER_GET,
            "test",
            "md5",
            "72CB4D809B375A54502C09360D879C64",
            id="md5-user-seller-get",
        ),
        pytest.param(
            {**ITEM_SELLER_GET, "sign_method": "hmac"},
            "helloworld",
            "hmac",
            "D56D7858309C31B6251083A874D48273",
            id="hmac",
        ),
        pytest.param(
            {**ITEM_SELLER_GET, "sign_method": "hmac-sha256"},
            "helloworld",
            "hmac-sha256",
            "04DB15AD0774D5CFCE2C837DE43E3FCEA9011ED74F3038FB6AB5F3C4CEA119E8",
            id="hmac-sha256",
        ),
    ],
)
def test_reference_vectors(params, secret, method, expected):
    assert sign(params, secret, method) == expected


def test_signing_string_is_sorted_key_value_pairs_without_separators():
    assert signing_string({"b": "2", "a": "1", "c": "x y"}) == b"a1b2cx y"


def test_signing_string_keeps_values_raw_not_url_encoded():
    assert signing_string({"k": "a&b=c d/é"}) == "ka&b=c d/é".encode()


@pytest.mark.parametrize("method", SIGN_METHODS)
def test_signature_is_upper_case_hex(method):
    signature = sign({"a": "1"}, "secret", method)
    assert signature == signature.upper()
    int(signature, 16)


@pytest.mark.parametrize("method", ["MD5", "sha256", "hmac-sha1", ""])
def test_unknown_method_raises_value_error_listing_the_methods(method):
    with pytest.raises(ValueError, match="md5, hmac, hmac-sha256"):
        sign({"a": "1"}, "secret", method)


# --- properties ---------------------------------------------------------------------------

keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12).filter(
    lambda k: k != "sign"
)
values = st.text(min_size=1, max_size=30).filter(lambda v: v.strip())
param_dicts = st.dictionaries(keys, values, min_size=1, max_size=8)
methods = st.sampled_from(SIGN_METHODS)
secrets = st.text(min_size=1, max_size=20)


@given(params=param_dicts, secret=secrets, method=methods, seed=st.integers())
def test_parameter_order_never_matters(params, secret, method, seed):
    items = list(params.items())
    random.Random(seed).shuffle(items)
    assert sign(dict(items), secret, method) == sign(params, secret, method)


@given(
    params=param_dicts,
    secret=secrets,
    method=methods,
    blank_key=keys,
    blank=st.sampled_from(["", " ", "  ", "\t", "\n", " \r\n ", "\u3000"]),
)
def test_empty_and_whitespace_only_values_are_dropped(params, secret, method, blank_key, blank):
    clean = {k: v for k, v in params.items() if k != blank_key}
    assert sign({**clean, blank_key: blank}, secret, method) == sign(clean, secret, method)


def test_none_values_are_dropped():
    assert sign({"a": "1", "b": None}, "s", "md5") == sign({"a": "1"}, "s", "md5")


@given(params=param_dicts, secret=secrets, method=methods, old_sign=st.text(max_size=40))
def test_the_sign_key_itself_is_ignored(params, secret, method, old_sign):
    assert sign({**params, "sign": old_sign}, secret, method) == sign(params, secret, method)


@given(
    value=st.text(min_size=1).filter(lambda v: v.strip() and not v.isascii()),
    secret=secrets,
)
def test_non_ascii_values_sign_their_utf8_bytes(value, secret):
    key = secret.encode("utf-8")
    message = b"app_key12345678" + b"value" + value.encode("utf-8")
    params = {"value": value, "app_key": "12345678"}

    assert sign(params, secret, "md5") == hashlib.md5(key + message + key).hexdigest().upper()
    assert sign(params, secret, "hmac") == hmac.new(key, message, "md5").hexdigest().upper()
    assert (
        sign(params, secret, "hmac-sha256") == hmac.new(key, message, "sha256").hexdigest().upper()
    )


def test_chinese_value_signs_its_utf8_bytes():
    params = {"name": "群访客工单创建"}
    expected = hashlib.md5(b"s" + "name群访客工单创建".encode() + b"s").hexdigest().upper()
    assert sign(params, "s", "md5") == expected


@given(params=param_dicts, method=methods)
def test_a_different_secret_gives_a_different_signature(params, method):
    assert sign(params, "secret-one", method) != sign(params, "secret-two", method)
