"""The issue platform's group types, as data (reference `sentry-issue-platform.md` §5).

Provenance: Sentry's `src/sentry/issues/grouptype.py` at `0008e9225012` (the newest copy read;
it releases 5002 and 6001 and adds 5003, 7001 and 8002 over the reference commit), plus type 1
(`error`) from `7698ea90003c` (`:233-240`), which the newer file no longer defines but which
Sentry still registers elsewhere. `source` is the line range at `7698ea90003c` where the type
exists there, else the newer commit's.

What the occurrence consumer reads from a type:

* whether it exists (`get_group_type_by_type_id`: an unregistered id is an invalid payload);
* `default_priority`, the occurrence's `initial_issue_priority` when the message has none;
* `released`, else whether the organization has the type's ingest feature
  (`allow_ingest`: `organizations:<slug with - for _>-ingest`); the consumer drops the
  message of an unreleased type without it.

Here an organization enables an unreleased type's ingest with an option row named after the
feature (`consumer orgs set-option SLUG organizations:feedback-ingest true`), the stand-in for
Sentry's feature handler (docs/differences.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final


class Category(IntEnum):
    """`GroupCategory` (`grouptype.py:25-31` at the reference; 7 and 8 are newer)."""

    ERROR = 1
    PERFORMANCE = 2
    PROFILE = 3  # deprecated; no type uses it
    CRON = 4
    REPLAY = 5
    FEEDBACK = 6
    UPTIME = 7
    METRIC_ALERT = 8


class Priority(IntEnum):
    """`PriorityLevel` (`types/group.py:71-74`)."""

    LOW = 25
    MEDIUM = 50
    HIGH = 75


@dataclass(frozen=True, slots=True)
class GroupType:
    type_id: int
    slug: str
    category: Category
    released: bool
    default_priority: Priority
    source: str  # where Sentry defines it

    @property
    def ingest_feature(self) -> str | None:
        """The organization feature that lets an unreleased type in; None when released."""
        if self.released:
            return None
        return f"organizations:{self.slug.replace('_', '-')}-ingest"


_P, _L, _M, _H = Category.PERFORMANCE, Priority.LOW, Priority.MEDIUM, Priority.HIGH
_REF = "7698ea90003c:src/sentry/issues/grouptype.py"
_NEW = "0008e9225012:src/sentry/issues/grouptype.py"

_TYPES: Final = (
    GroupType(1, "error", Category.ERROR, True, _M, f"{_REF}:233-240"),
    GroupType(1001, "performance_slow_db_query", _P, True, _L, f"{_REF}:252-260"),
    GroupType(1004, "performance_render_blocking_asset_span", _P, True, _L, f"{_REF}:263-270"),
    GroupType(1006, "performance_n_plus_one_db_queries", _P, True, _L, f"{_REF}:273-280"),
    GroupType(1007, "performance_consecutive_db_queries", _P, True, _L, f"{_REF}:283-291"),
    GroupType(1008, "performance_file_io_main_thread", _P, True, _L, f"{_REF}:294-301"),
    GroupType(1009, "performance_consecutive_http", _P, True, _L, f"{_REF}:304-312"),
    GroupType(1010, "performance_n_plus_one_api_calls", _P, True, _L, f"{_REF}:315-322"),
    GroupType(1011, "performance_m_n_plus_one_db_queries", _P, True, _L, f"{_REF}:325-332"),
    GroupType(1012, "performance_uncompressed_assets", _P, True, _L, f"{_REF}:335-343"),
    GroupType(1013, "performance_db_main_thread", _P, True, _L, f"{_REF}:346-353"),
    GroupType(1015, "performance_large_http_payload", _P, True, _L, f"{_REF}:356-363"),
    GroupType(1016, "performance_http_overhead", _P, False, _L, f"{_REF}:366-373"),
    GroupType(1017, "performance_duration_regression", _P, False, _L, f"{_REF}:377-386"),
    GroupType(1018, "performance_p95_endpoint_regression", _P, True, _M, f"{_REF}:389-399"),
    GroupType(1019, "performance_streamed_spans_exp", _P, False, _L, f"{_REF}:403-411"),
    GroupType(2001, "profile_file_io_main_thread", _P, False, _L, f"{_REF}:415-421"),
    GroupType(2002, "profile_image_decode_main_thread", _P, False, _L, f"{_REF}:424-430"),
    GroupType(2003, "profile_json_decode_main_thread", _P, False, _L, f"{_REF}:433-439"),
    GroupType(2004, "profile_core_data_main_exp", _P, False, _L, f"{_REF}:442-448"),
    GroupType(2006, "profile_view_is_slow_experimental", _P, False, _L, f"{_REF}:452-458"),
    GroupType(2007, "profile_regex_main_thread", _P, True, _L, f"{_REF}:461-468"),
    GroupType(2008, "profile_frame_drop_experimental", _P, False, _L, f"{_REF}:471-477"),
    GroupType(2009, "profile_frame_drop", _P, True, _L, f"{_REF}:480-488"),
    GroupType(2010, "profile_function_regression_exp", _P, False, _L, f"{_REF}:491-499"),
    GroupType(2011, "profile_function_regression", _P, True, _M, f"{_REF}:502-511"),
    GroupType(4001, "monitor_check_in_failure", Category.CRON, True, _H, f"{_REF}:514-523"),
    # 4002 and 4003 are deprecated aliases that inherit 4001's slug and settings.
    GroupType(4002, "monitor_check_in_failure", Category.CRON, True, _H, f"{_REF}:531-534"),
    GroupType(4003, "monitor_check_in_failure", Category.CRON, True, _H, f"{_REF}:537-540"),
    GroupType(5001, "replay_click_dead", Category.REPLAY, False, _M, f"{_REF}:543-550"),
    # Released in the newer file (unreleased at the reference commit).
    GroupType(5002, "replay_click_rage", Category.REPLAY, True, _M, _NEW),
    GroupType(5003, "replay_hydration_error", Category.REPLAY, True, _M, _NEW),
    GroupType(6001, "feedback", Category.FEEDBACK, True, _M, _NEW),
    GroupType(7001, "uptime_domain_failure", Category.UPTIME, False, _H, _NEW),
    GroupType(8002, "metric_issue_poc", Category.METRIC_ALERT, False, _H, _NEW),
)

GROUP_TYPES: Final[dict[int, GroupType]] = {group_type.type_id: group_type for group_type in _TYPES}


def get(type_id: int) -> GroupType | None:
    """The registered type with that id, or None (Sentry raises ValueError)."""
    return GROUP_TYPES.get(type_id)
