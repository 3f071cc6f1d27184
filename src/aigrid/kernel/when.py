"""The schedule an agent's one-sentence description states ("every weekday at 8:00", "in two hours").

Libraries read the words: ``recurrent`` turns a recurrence into an RFC 5545 RRULE; ``parsedatetime``
(which recurrent is built on) reads a one-time phrase and says how exact it is, and recurrent's reader of
times adds the bare hours it leaves out. The glue here only finds which words of a longer sentence are the
time phrase (a run of words the two libraries' vocabularies know) and maps the RRULE onto the triggers.

Readings chosen, so that a schedule never depends on a guess the owner cannot see in the summary:
bare hours are on the 24-hour clock ("at 8" is 08:00, "at 7" is 07:00) unless a part of the day says
otherwise ("every evening at 7" is 19:00); a calendar recurrence with no time fires at 09:00; a one-time
phrase already past gives None (the caller can tell the owner the time has gone), except a bare time of
day ("at 3pm"), which means its next occurrence. What a trigger cannot hold (every other Monday, until
May, except Fridays) also gives None, for the model to ask about.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import parsedatetime
from recurrent.event_parser import RecurringEvent, Tokenizer

from aigrid.spec import CronTrigger, IntervalTrigger, OnceTrigger, TimedTrigger

_DEFAULT_HOUR = 9
_HOURS_24 = (0, 24)  # recurrent's preferred_time_range; its default (8, 19) makes "at 7:30" 19:30
_MAX_RUN_WORDS = 16  # a time phrase is short; longer runs of time words are cut, which bounds the work
_MAX_RUNS = 32  # candidate phrases tried per text, so 10,000 characters of "every day every day" stay quick

_PDT = parsedatetime.Constants()
_PARTS_OF_DAY: dict[str, int] = {word: int(v["hr"]) for word, v in _PDT.re_sources.items()}  # evening: 18
# Words parsedatetime reads that recurrent's tokenizer does not: "tomorrow", "noon", "hours", "after".
_PDT_WORDS = frozenset(
    [*_PDT.dayOffsets, *_PARTS_OF_DAY, *_PDT.Modifiers, *_PDT.numbers]
    + [unit for units in _PDT.units.values() for unit in units]
)
_FULL_NAMES = frozenset(_PDT.locale.Weekdays + _PDT.locale.Months)  # "Sun" alone is more often a word
_REWRITE = {"hourly": "every hour"}  # recurrent knows daily, weekly, monthly and yearly, not hourly
_CONTENT = {kind for kind, _ in Tokenizer.CONTENT_TYPES} | {"time", "pdt", "hourly"}
_RECURRING = {"every", "daily", "recurring_unit", "plural_weekday", "hourly"}
_ADJECTIVES = {"daily", "recurring_unit", "hourly"}  # "my daily news" states no schedule; "daily at 7" does
_TRAILING = {"sep", "repeat", "ambigmod", "starting", "ending", "other"}  # "every day at 8 and" ends at 8
_PUNCT = ",.;:!?()[]{}\"'“”‘’"
_SENTENCE_END = frozenset(".;!?")
# Every n of these units is a plain interval; longer units vary in length and need the calendar.
_UNIT_S = {"secondly": 1, "minutely": 60, "hourly": 3600, "daily": 86_400, "weekly": 604_800}
_UNIT_NAMES = {"secondly": "second", "minutely": "minute", "hourly": "hour", "daily": "day", "weekly": "week"}
_CRON_WEEKDAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")  # cron numbers week days 0-6 from Sunday
_UNSUPPORTED = {"dtstart", "until", "count", "exdate", "exrule", "byyearday", "bysetpos", "byweekno"}
_EXACT = (
    parsedatetime.pdtContext.ACU_WEEK
    | parsedatetime.pdtContext.ACU_DAY
    | parsedatetime.pdtContext.ACU_HALFDAY
    | parsedatetime.pdtContext.ACU_TIME
)  # a lone month ("may I ...") or "now" is no time to fire at


@dataclass(frozen=True, slots=True)
class When:
    """A time phrase found in a description and the trigger it means."""

    trigger: TimedTrigger
    phrase: str  # the words of the description it came from, as written
    summary: str  # readable, e.g. "every weekday at 8am (Asia/Shanghai)"


class _Word(NamedTuple):
    start: int  # offsets in the text, punctuation around the word left out
    end: int
    text: str  # lower case, without the punctuation
    kind: str | None  # recurrent's token type, "pdt" for parsedatetime's words, None for other words
    punct: str  # the punctuation that followed it


def parse_when(text: str, now: datetime, timezone: str = "UTC") -> When | None:
    """The schedule a description states, or None if it states none."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"'{timezone}' is not a known time zone (such as UTC or Asia/Shanghai)") from exc
    local_now = now.astimezone(zone).replace(tzinfo=None)  # both libraries count in naive local time
    tried = 0
    for run, cut in _runs(_words(text)):
        words = _trim(run)
        if not any(w.kind in _CONTENT for w in words):
            continue
        tried += 1
        if tried > _MAX_RUNS:
            break
        phrase = text[words[0].start : words[-1].end]
        # "daily" right before a word that is not about time is an adjective ("my daily news").
        last = words[-1]
        anchored = any(w.kind in _RECURRING for w in words[:-1]) or (
            last.kind in _RECURRING and not (last.kind in _ADJECTIVES and cut and not last.punct)
        )
        if anchored and any(w.kind in ("starting", "ending", "except") or w.text == "from" for w in words):
            # A start, an end or exceptions ("every day until May"), which no trigger holds, and which
            # recurrent reads with nested parsers that can search a rule's dates for minutes.
            return None
        rule = _rrule(words, local_now) if anchored else None
        if rule is not None:  # a recurrence: a trigger holds it, or the description asks for what none can
            found = _recurrence(*rule, words, local_now, zone.key)
            return None if found is None else When(found[0], phrase, found[1])
        found = _once(words, now, local_now, zone)
        if found is not None:
            return When(found[0], phrase, found[1])
    return None


def _words(text: str) -> list[_Word]:
    words = []
    for match in re.finditer(r"\S+", text):  # whitespace-separated words, as recurrent's tokenizer splits
        raw = match.group()
        lead = len(raw) - len(raw.lstrip(_PUNCT))
        bare = raw.strip(_PUNCT)
        start, word = match.start() + lead, bare.lower()
        kind = _kind(word) if word else None
        words.append(_Word(start, start + len(bare), word, kind, raw[lead + len(bare) :]))
    return words


def _kind(word: str) -> str | None:
    if word in _REWRITE or word == "except":  # "except" keeps "every day except Fridays" one phrase
        return word
    for kind, regex in Tokenizer.TYPES:
        if regex.fullmatch(word):  # the tokenizer's match() would take "monitor" for Monday
            return str(kind)
    return "pdt" if word in _PDT_WORDS else None


def _runs(words: list[_Word]) -> Iterator[tuple[list[_Word], bool]]:
    """Runs of consecutive time words, each with whether another word (not punctuation) cut it off."""
    run: list[_Word] = []
    for word in words:
        if word.kind is None:
            if run:
                yield run, True
            run = []
            continue
        run.append(word)
        if _SENTENCE_END & set(word.punct) or len(run) == _MAX_RUN_WORDS:
            yield run, False
            run = []
    if run:
        yield run, False


def _trim(run: list[_Word]) -> list[_Word]:
    """The run without linking words at its ends, keeping "at 9 every day" and "in two hours" whole."""
    start, end = 0, len(run)
    while start < end and (
        (run[start].kind == "sep" and run[start].text not in ("at", "in"))
        # "watch this every week": "this" belongs to the sentence, not to the schedule
        or (run[start].kind == "ambigmod" and start + 1 < end and run[start + 1].kind == "every")
    ):
        start += 1
    while end > start and (run[end - 1].kind in _TRAILING or run[end - 1].text in _PDT.Modifiers):
        end -= 1
    return run[start:end]


def _part_of_day(words: list[_Word]) -> int | None:
    return next((_PARTS_OF_DAY[w.text] for w in words if w.text in _PARTS_OF_DAY), None)


class _Event(RecurringEvent):  # type: ignore[misc]  # recurrent has no type hints
    """recurrent's parser without its search for one-off dates such as "the first Monday in August"."""

    def parse_singleton(self, s: str) -> None:
        return None  # it iterates an RRULE to find them, which on some word salads runs for minutes


def _event(local_now: datetime) -> _Event:
    # recurrent builds its parsedatetime calendar in the old flag style, which it reads, and which warns.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", parsedatetime.pdt20DeprecationWarning)
        return _Event(now_date=local_now, preferred_time_range=_HOURS_24)


def _rrule(words: list[_Word], local_now: datetime) -> tuple[_Event, str] | None:
    """recurrent's reading of the words as a recurrence (its parser and the RRULE), if they are one."""
    parts: list[str] = []
    for i, word in enumerate(words):
        if word.text in _PARTS_OF_DAY:  # recurrent reads no parts of the day: "every morning" is every day
            if i and words[i - 1].kind == "every":
                parts.append("day")
            continue
        parts.append(_REWRITE.get(word.text, word.text))
    event = _event(local_now)
    try:
        rule = event.parse(" ".join(parts))
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):  # recurrent fails on word salads
        return None
    return (event, rule) if isinstance(rule, str) else None


def _recurrence(
    event: _Event, rule: str, words: list[_Word], local_now: datetime, tz: str
) -> tuple[TimedTrigger, str] | None:
    """A cron or interval trigger for recurrent's RRULE, or None where a trigger cannot hold it."""
    params: dict[str, Any] = event.get_params()
    freq, interval = params.get("freq"), int(params.get("interval", 1))
    calendar = {"byday", "bymonthday", "bymonth", "byhour", "byminute"} & params.keys()
    part = _part_of_day(words)
    if _UNSUPPORTED & params.keys():
        return None
    if not calendar and part is None and freq in _UNIT_S:
        seconds = interval * _UNIT_S[freq]
        unit = _UNIT_NAMES[freq]
        summary = f"every {unit}" if interval == 1 else f"every {interval} {unit}s"
        return (IntervalTrigger(every_s=seconds), summary) if 1 <= seconds <= 366 * 86_400 else None
    if interval != 1 or freq not in ("daily", "weekly", "monthly", "yearly"):
        return None  # cron cannot count every other week, nor hours within a day
    try:
        hour = int(params.get("byhour", _DEFAULT_HOUR if part is None else part))
        if part is not None and part >= 12 and 1 <= hour < 12:
            hour += 12  # "every evening at 7"
        minute = int(params.get("byminute", 0))
        dom = _positive(params.get("bymonthday", "1" if freq in ("monthly", "yearly") else "*"))
        month = _positive(params.get("bymonth", "1" if freq == "yearly" else "*"))
        dow = _cron_weekdays(params["byday"]) if "byday" in params else "*"
        if freq == "weekly" and dow == "*":
            dow = str((local_now.weekday() + 1) % 7)  # "every week at 9": on today's week day
        if dow != "*" and "bymonthday" not in params:
            dom = "*"  # "the first Monday of every month": cron would fire on the 1st or any Monday
        trigger = CronTrigger(cron=f"{minute} {hour} {dom} {month} {dow}", timezone=tz)
    except ValueError:  # a value cron cannot hold, such as the last day of the month (-1)
        return None
    # Show what fires, defaults included, in recurrent's words ("every weekday at 8am").
    params.update(byhour=hour, byminute=minute)
    if dom != "*":
        params["bymonthday"] = dom
    if month != "*":
        params["bymonth"] = month
    if "byday" not in params and dow != "*":
        params["byday"] = _CRON_WEEKDAYS[int(dow)]
    shown = "RRULE:" + ";".join(f"{key.upper()}={str(value).upper()}" for key, value in params.items())
    said = str(event.format(shown))  # recurrent gives the rule back unchanged where it has no words for it
    return trigger, f"{said if said != shown else trigger.cron} ({tz})"


def _positive(field: str) -> str:
    if field != "*" and any(int(v) < 1 for v in field.split(",")):
        raise ValueError(f"cron has no field {field}")
    return field


def _cron_weekdays(byday: str) -> str:
    """RRULE week days ("MO,TU" or "1MO") as cron's ("1,2" or "1#1"); cron has no "last Friday"."""
    days = []
    for code in byday.split(","):
        nth, day = code[:-2], _CRON_WEEKDAYS.index(code[-2:])
        if nth and int(nth) < 1:
            raise ValueError(f"cron has no week day {code}")
        days.append(f"{day}#{nth}" if nth else str(day))
    return ",".join(sorted(set(days))) if days != ["1", "2", "3", "4", "5"] else "1-5"


def _once(
    words: list[_Word], now: datetime, local_now: datetime, zone: ZoneInfo
) -> tuple[TimedTrigger, str] | None:
    """A one-time trigger in the future, or None."""
    if len(words) == 1 and words[0].kind in ("DoW", "MoY") and words[0].text not in _FULL_NAMES:
        return None  # "a flight to Sun City", "a wed dress"
    if all(w.text.lower().strip(_PUNCT) in _PARTS_OF_DAY for w in words):
        return None  # "for lunch", "the morning news", "the night train": a meal or a part of a day alone
    phrase = " ".join(w.text for w in words)
    calendar = parsedatetime.Calendar(version=parsedatetime.VERSION_CONTEXT_STYLE)
    parsed, context = calendar.parseDT(phrase, sourceTime=local_now)
    if not context.accuracy & _EXACT:
        return None
    # parsedatetime leaves out a bare hour ("tomorrow at 9"), which recurrent's reader of times adds.
    local: datetime = _event(local_now).parse_time(phrase, parsed)[0]
    part = _part_of_day(words)
    if part is not None and part >= 12 and 1 <= local.hour < 12:
        local += timedelta(hours=12)  # "tonight at 8"
    if local <= local_now and not context.hasDate:
        local += timedelta(days=1)  # "at 3pm" said at 4pm: the next 3pm; "at 3pm today" stays past
    # Through UTC and back, so a wall time that a clock change skips becomes the instant it means.
    at = local.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)
    if at <= now:
        return None
    return OnceTrigger(at=at), f"once, {at:%a %d %b %Y at %H:%M} ({zone.key})"
