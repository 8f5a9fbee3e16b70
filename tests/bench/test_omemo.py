"""The OMEMO message benchmark at toy size against ``schnack serve``: both versions measured, sizes sane."""

from __future__ import annotations

from bench import omemo


def test_both_versions_are_measured() -> None:
    figures = omemo.run(messages=10)
    assert set(figures) == {"legacy", "omemo2"}
    for version in figures.values():
        first, steady = version["first_message"], version["steady"]
        assert steady["messages"] == 10
        assert version["plaintext_bytes_sent"] < steady["bytes_sent_median"] <= steady["bytes_sent_max"]
        assert first["encrypt_ms"] > 0 and first["decrypt_ms"] > 0
        assert steady["encrypt_ms_median"] > 0 and steady["decrypt_ms_median"] > 0
    legacy = figures["legacy"]
    # Without padding, the key exchange is what makes the first message the larger one.
    assert legacy["steady"]["bytes_sent_max"] < legacy["first_message"]["bytes_sent"]
    # A short text to one device, in the version today's apps speak: under a kilobyte.
    assert legacy["steady"]["bytes_sent_max"] < 1024
