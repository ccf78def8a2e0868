"""Personal information masked in what people read (udfs.redact)."""
import pytest

from udfs.redact import redact


@pytest.mark.parametrize("text, masked", [
    ("call me 555-123-4567", "call me [phone]"),
    ("(555) 123-4567", "[phone]"),
    ("my number is +44 7700 900123 ok", "my number is [phone] ok"),
    ("5 5 5 1 2 3 4 5 6 7", "[phone]"),
    ("mail kid123@example.com now", "mail [e-mail] now"),
    ("i live at 42 oak tree road come over", "i live at [address] come over"),
    ("snap: coolkid12", "snap: [handle]"),
    ("hmu on insta @cool.kid_12", "hmu on insta @[handle]"),
    ("rule:personal_information_shared matched '555 123 4567'", "rule:personal_information_shared matched '[phone]'"),
    ("gg wp level 12, 1000 coins, 3rd place", "gg wp level 12, 1000 coins, 3rd place"),  # game numbers stay
])
def test_redact(text, masked):
    assert redact(text) == masked
