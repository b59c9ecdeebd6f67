"""A numbered migration's checksum covers its statements, not its whole-line comments: comments can
be corrected without a database reporting the file as changed, and any statement edit still is."""

from __future__ import annotations

import hashlib

from smartpay import migrate


def test_comments_do_not_change_the_checksum_and_statements_do() -> None:
    original = migrate.Migration("0099", "example", "-- What the table is for.\nCREATE TABLE t (a int);\n")
    reworded = migrate.Migration("0099", "example", "-- What the table holds, said better.\nCREATE TABLE t (a int);\n")
    edited = migrate.Migration("0099", "example", "-- What the table is for.\nCREATE TABLE t (a bigint);\n")
    assert original.checksum == reworded.checksum != edited.checksum
    assert reworded.recorded_as(original.checksum) and not edited.recorded_as(original.checksum)


def test_a_whole_file_checksum_recorded_earlier_still_counts_as_applied() -> None:
    for m in migrate.available():
        assert m.recorded_as(hashlib.sha256(m.sql.encode()).hexdigest()), m.name
        assert not m.recorded_as("0" * 64), m.name
