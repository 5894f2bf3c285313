"""The price notice's HTML: local times with the zone, tiers, TOU hours, the ceiling."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cloud.documents.price_notice import NoticeSite, render_notice
from cloud.tariffs.admin import TariffView, VersionView

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _version(ef: datetime, kind: str, spec: dict[str, Any], fee: str = "0") -> VersionView:
    return VersionView(uuid.uuid4(), ef, kind, spec, Decimal(fee), None, "operator:a", NOW)


def _tariff(name: str, utility: str, *versions: VersionView) -> TariffView:
    current = [v for v in versions if v.effective_from <= NOW]
    return TariffView(
        uuid.uuid4(),
        name,
        utility,
        None,
        True,
        versions,
        current[-1] if current else None,
        tuple(v for v in versions if v.effective_from > NOW),
    )


def test_times_are_local_with_the_zone_and_summer_time_is_marked() -> None:
    summer = _version(datetime(2027, 7, 1, 6, 0, tzinfo=UTC), "flat", {"unit_price": "0.9"})
    winter = _version(datetime(2020, 1, 1, tzinfo=UTC), "flat", {"unit_price": "0.8"})
    site = NoticeSite("Wharf", "Group", "Europe/Berlin", None, Decimal("0.15"))
    html = render_notice(site, [_tariff("Shops", "electricity", winter, summer)], NOW)
    assert "Europe/Berlin，UTC+01:00" in html
    assert "2020年1月1日 01:00 起执行" in html  # winter: the usual offset, not repeated
    assert "2027年7月1日 08:00（UTC+02:00）" in html
    assert "目录电价" not in html  # no catalogue price recorded


def test_tiers_tou_hours_fee_and_ceiling() -> None:
    tou = _version(
        NOW,
        "tou",
        {
            "prices": {"peak": "1.1", "valley": "0.3"},
            "windows": [
                {"start": "00:00", "period": "valley"},
                {"start": "08:00", "period": "peak"},
                {"start": "22:00", "period": "valley"},
            ],
        },
        "5.00",
    )
    tiered = _version(
        NOW,
        "tiered",
        {
            "cycle": "year",
            "blocks": [{"up_to": "180", "price": "3"}, {"up_to": None, "price": "4"}],
        },
    )
    site = NoticeSite("滨江", "集团", "Asia/Shanghai", Decimal("1.0000"), Decimal("0.15"))
    html = render_notice(
        site, [_tariff("分时", "electricity", tou), _tariff("水", "water", tiered)], NOW
    )
    assert "峰时段 08:00–22:00" in html and "1.1000 元/千瓦时" in html
    assert "谷时段 00:00–08:00，22:00–24:00" in html
    assert "¥5.00 /月" in html
    assert "第1档（每年）0–180 立方米" in html and "第2档（每年）180 立方米以上" in html
    assert "1.1500 元/千瓦时" in html and "15%" in html


def test_a_site_without_tariffs_says_so() -> None:
    site = NoticeSite("空", "集团", "Asia/Shanghai", None, Decimal("0.15"))
    assert "暂无执行中的收费标准" in render_notice(site, [], NOW)
