"""The device record's own helpers."""

from __future__ import annotations

import attrs

from pusher_trio.model import Device


def test_refreshed_keeps_every_field_but_the_registration_time() -> None:
    """`refreshed` lists the fields by position: a field added to Device must be added there."""
    device = Device(
        aor="alice@example.com",
        device_id="urn:uuid:1",
        type="apple",
        app="com.example.phone",
        token="ab" * 32,
        sandbox=True,
        push_type="voip",
        extra={"source": "rfc8599", "team_id": "T"},
        user_agent="Phone/1.0",
        contact="sip:alice@10.0.0.1;pn-prid=x",
        bound=False,
        last_registered=1.0,
        state="invalid",
        reason="Unregistered",
        invalidated_at=2.0,
    )
    # every field differs from its default, so a dropped or shifted one shows
    for field in attrs.fields(Device):
        if field.default is not attrs.NOTHING and not isinstance(field.default, attrs.Factory):
            assert getattr(device, field.name) != field.default, field.name
    refreshed = device.refreshed(5.0)
    assert refreshed == attrs.evolve(device, last_registered=5.0)
    assert refreshed.same_registration(device)
