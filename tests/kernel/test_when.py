"""Schedules read from an agent's one-sentence description: cron, interval and one-time triggers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aigrid.kernel.when import When, parse_when
from aigrid.spec import CronTrigger, IntervalTrigger, OnceTrigger

SHANGHAI = "Asia/Shanghai"
SH = ZoneInfo(SHANGHAI)
NOW = datetime(2026, 3, 10, 14, 0, tzinfo=SH)  # a Tuesday afternoon in Shanghai


def _when(text: str, now: datetime = NOW, timezone: str = SHANGHAI) -> When:
    when = parse_when(text, now, timezone)
    assert when is not None, text
    return when


@pytest.mark.parametrize(
    ("text", "cron"),
    [
        ("every weekday at 8:00", "0 8 * * 1-5"),
        ("every weekday at 8", "0 8 * * 1-5"),
        ("each Monday", "0 9 * * 1"),  # no time said: 09:00
        ("every Monday at 9am", "0 9 * * 1"),
        ("every day at 7pm", "0 19 * * *"),
        ("daily at 07:30", "30 7 * * *"),
        ("every morning at 6", "0 6 * * *"),
        ("every week on Friday at 17:00", "0 17 * * 5"),
        ("on the 1st of every month at 10:00", "0 10 1 * *"),
        ("every month on the 15th", "0 9 15 * *"),
        ("every weekend at 10", "0 10 * * 0,6"),
        ("every Monday and Wednesday at 9", "0 9 * * 1,3"),
        ("on mondays and fridays at 18:30", "30 18 * * 1,5"),
        ("every first Monday of the month at 9", "0 9 * * 1#1"),
        ("every year on March 3", "0 9 3 3 *"),
        ("monthly", "0 9 1 * *"),
        ("at 9 every day", "0 9 * * *"),
    ],
)
def test_calendar_recurrences_become_cron_triggers_in_the_owners_zone(text: str, cron: str) -> None:
    when = _when(text)
    assert when.trigger == CronTrigger(cron=cron, timezone=SHANGHAI)
    assert when.phrase == text
    assert when.summary.endswith(f"({SHANGHAI})")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("every hour", 3600),
        ("every 15 minutes", 900),
        ("every 2 hours", 7200),
        ("hourly", 3600),
        ("every minute", 60),
        ("every 30 seconds", 30),
        ("every 3 days", 3 * 86_400),
        ("every 2 weeks", 14 * 86_400),
    ],
)
def test_plain_intervals_become_interval_triggers(text: str, seconds: int) -> None:
    when = _when(text)
    assert when.trigger == IntervalTrigger(every_s=seconds)
    assert when.phrase == text


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("in two hours", datetime(2026, 3, 10, 16, 0, tzinfo=SH)),
        ("in 30 minutes", datetime(2026, 3, 10, 14, 30, tzinfo=SH)),
        ("tomorrow at 9", datetime(2026, 3, 11, 9, 0, tzinfo=SH)),
        ("tomorrow at 9:00", datetime(2026, 3, 11, 9, 0, tzinfo=SH)),
        ("on December 24 at 18:00", datetime(2026, 12, 24, 18, 0, tzinfo=SH)),
        ("at 3pm today", datetime(2026, 3, 10, 15, 0, tzinfo=SH)),
        ("at 3pm", datetime(2026, 3, 10, 15, 0, tzinfo=SH)),
        ("tonight at 8", datetime(2026, 3, 10, 20, 0, tzinfo=SH)),
        ("next Friday at 10", datetime(2026, 3, 20, 10, 0, tzinfo=SH)),
    ],
)
def test_one_time_phrases_become_once_triggers_at_the_local_time(text: str, at: datetime) -> None:
    when = _when(text)
    assert isinstance(when.trigger, OnceTrigger)
    assert when.trigger.at == at and when.trigger.at.utcoffset() == timedelta(hours=8)
    assert when.phrase == text
    assert when.summary.startswith("once") and SHANGHAI in when.summary


def test_the_phrase_is_found_in_a_longer_sentence_as_written() -> None:
    text = (
        "Every weekday at 8:00, check the price of the Lumen 27-inch monitor in both shops "
        "and tell me when it is under 2,100 yuan"
    )
    when = _when(text)
    assert when.trigger == CronTrigger(cron="0 8 * * 1-5", timezone=SHANGHAI)
    assert when.phrase == "Every weekday at 8:00"
    assert when.summary == "every weekday at 8am (Asia/Shanghai)"


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("Remind me tomorrow at 9 to call mum", "tomorrow at 9"),
        ("Check the news every week.", "every week"),
        ("Watch this every week for me", "every week"),
        ("every day at 8 and tell me the weather", "every day at 8"),
        ("Every Monday at 9am, summarise the week's news for me.", "Every Monday at 9am"),
        ("Summarise the headlines hourly.", "hourly"),
    ],
)
def test_the_phrase_leaves_out_the_words_around_it(text: str, phrase: str) -> None:
    assert _when(text).phrase == phrase


def test_a_cron_trigger_fires_at_the_owners_local_time() -> None:
    trigger = _when("every weekday at 8:00").trigger
    assert isinstance(trigger, CronTrigger) and trigger.timezone == SHANGHAI
    # Tuesday 14:00 in Shanghai: the next firing is Wednesday 08:00 there, 00:00 UTC.
    fire = trigger.next_after(NOW)
    assert fire is not None
    assert fire == datetime(2026, 3, 11, 8, 0, tzinfo=SH)
    assert fire.astimezone(UTC) == datetime(2026, 3, 11, 0, 0, tzinfo=UTC)
    # Friday 09:00 in Shanghai: the next weekday morning is Monday.
    friday = datetime(2026, 3, 13, 9, 0, tzinfo=SH)
    assert trigger.next_after(friday) == datetime(2026, 3, 16, 8, 0, tzinfo=SH)


def test_times_of_day_are_in_the_owners_zone_not_the_clocks() -> None:
    # 20:00 UTC on the 10th is already 04:00 on the 11th in Shanghai, so "tomorrow" is the 12th.
    when = _when("tomorrow at 9", now=datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
    assert when.trigger == OnceTrigger(at=datetime(2026, 3, 12, 9, 0, tzinfo=SH))


def test_the_default_zone_is_utc() -> None:
    when = parse_when("every day at 7pm", NOW)
    assert when is not None and when.trigger == CronTrigger(cron="0 19 * * *", timezone="UTC")
    once = parse_when("tomorrow at 9", datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    assert once is not None and once.trigger == OnceTrigger(at=datetime(2026, 3, 11, 9, 0, tzinfo=UTC))


def test_a_time_skipped_by_a_clock_change_becomes_the_instant_it_means() -> None:
    # New York springs forward at 02:00 on 8 March 2026: two hours after 00:30 EST is 03:30 EDT.
    now = datetime(2026, 3, 8, 5, 30, tzinfo=UTC)
    trigger = _when("in two hours", now=now, timezone="America/New_York").trigger
    assert isinstance(trigger, OnceTrigger)
    assert trigger.at == now + timedelta(hours=2)
    assert trigger.at.utcoffset() == timedelta(hours=-4)


def test_a_one_time_phrase_already_past_gives_none() -> None:
    four_pm = datetime(2026, 3, 10, 16, 0, tzinfo=SH)
    assert parse_when("at 3pm today", four_pm, SHANGHAI) is None
    assert parse_when("on December 24 at 18:00", datetime(2026, 12, 24, 19, 0, tzinfo=SH), SHANGHAI) is None


def test_a_bare_time_of_day_already_past_means_the_next_one() -> None:
    when = _when("at 3pm", now=datetime(2026, 3, 10, 16, 0, tzinfo=SH))
    assert when.trigger == OnceTrigger(at=datetime(2026, 3, 11, 15, 0, tzinfo=SH))


def test_a_date_already_past_this_year_means_next_year() -> None:
    when = _when("on December 24 at 18:00", now=datetime(2026, 12, 25, 10, 0, tzinfo=SH))
    assert when.trigger == OnceTrigger(at=datetime(2027, 12, 24, 18, 0, tzinfo=SH))


@pytest.mark.parametrize(
    "text",
    [
        "summarise this article",
        "tell me when the price drops",
        "summarise my daily news",
        "may I have a report",
        "send it now",
        "check each of the 3 shops",
        "once the price drops, tell me",
        "Find me a flight to Sun City in May",
        "Tell me the weather in Paris",
    ],
)
def test_sentences_without_a_schedule_give_none(text: str) -> None:
    assert parse_when(text, NOW, SHANGHAI) is None


@pytest.mark.parametrize(
    "text",
    [
        "every other Monday",
        "on the last day of every month",
        "every day until May",
        "every day except Fridays",
        "starting tomorrow, every day at 9",
        "every 400 days",
        "every 0 minutes",
        "every day at 25:00",
    ],
)
def test_schedules_no_trigger_can_hold_give_none(text: str) -> None:
    assert parse_when(text, NOW, SHANGHAI) is None


def test_empty_text_gives_none() -> None:
    assert parse_when("", NOW) is None
    assert parse_when("   \n\t ", NOW) is None


@pytest.mark.parametrize(
    "text",
    [
        "x" * 10_000,
        ("lorem ipsum dolor sit amet, " * 400)[:9_980] + " every day",
        ("every day at 9 on 3 " * 600)[:10_000],
        ("the " * 2_500)[:10_000],
    ],
)
def test_ten_thousand_characters_are_read_quickly(text: str) -> None:
    started = time.perf_counter()
    parse_when(text, NOW, SHANGHAI)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "text",
    [
        "0:00 second 0 8:00 until 25:00 month",  # recurrent once searched this rule's dates for minutes
        "second mon last other january hours once",  # and raised ValueError on this
        "morning month from tonight",  # and TypeError on this
    ],
)
def test_word_salads_are_read_quickly_without_raising(text: str) -> None:
    started = time.perf_counter()
    when = parse_when(text, NOW, SHANGHAI)
    assert time.perf_counter() - started < 1.0
    assert when is None or when.trigger.next_after(NOW) is not None


def test_a_schedule_at_the_end_of_a_long_text_is_found() -> None:
    text = "lorem ipsum dolor sit amet, " * 350 + "every day at 9"
    when = _when(text)
    assert when.trigger == CronTrigger(cron="0 9 * * *", timezone=SHANGHAI)
    assert when.phrase == "every day at 9"


def test_a_naive_clock_or_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_when("every hour", datetime(2026, 3, 10, 14, 0))
    with pytest.raises(ValueError, match="time zone"):
        parse_when("every hour", NOW, "Mars/Olympus_Mons")


@pytest.mark.parametrize(
    "text",
    [
        "Pay bob 80 yuan for lunch",
        "Order dinner from Jade Garden",
        "Summarise the morning news",
        "Book the night train",
        "Find a hotel in Beijing for tonight",
    ],
)
def test_a_meal_or_a_part_of_the_day_alone_is_no_schedule(text: str) -> None:
    assert parse_when(text, datetime(2026, 11, 23, 2, tzinfo=UTC), "Asia/Shanghai") is None
