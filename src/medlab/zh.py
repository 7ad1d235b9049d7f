"""Chinese conventions that several stages share: the enumeration of a list, the resident ID check digit."""

from __future__ import annotations

import datetime as dt


def join_list(items: list[str]) -> str:
    """['发热', '咳嗽', '咳痰'] -> '发热、咳嗽和咳痰' (the Chinese enumeration comma)."""
    if len(items) == 1:
        return items[0]
    return "、".join(items[:-1]) + "和" + items[-1]


# GB 11643 resident identity numbers: 17 digits (region, birth date, sequence) + a check digit
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


def id_check_digit(first17: str) -> str:
    """GB 11643 check digit of the first 17 digits (ISO 7064 MOD 11-2)."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError(f"need 17 digits, got {first17!r}")
    return ID_CHECK[sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS, strict=True)) % 11]


def id_number_valid(number: str) -> bool:
    """True for an 18-character resident ID whose birth date and check digit are valid."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    try:
        dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return number[17].upper() == id_check_digit(number[:17])
