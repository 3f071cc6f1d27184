"""The words ``aigrid.learn.generate`` makes training tasks of: templates, made-up names, ways to say things.

Templates are ``str.format`` strings; a template may leave out any of the slots its family offers.
The entry's families have at least twelve each, varying word order, politeness and how a price or a
pick is said; amounts and days are said several ways too (digits or words, "2026-12-05" or "Dec 5,
2026"). Nothing here comes from a held-out file.
"""

from __future__ import annotations

import random
import re
from datetime import date

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
NUMBER_WORDS.update({9: "nine", 10: "ten", 11: "eleven", 12: "twelve"})

# Names that are plural nouns, which take no "a": earbuds, shoes, buns, dumplings...
PLURAL = re.compile(r"(buds|phones|shoes|beans|buns|tarts|dumplings|noodles)\b", re.IGNORECASE)


def cap(text: str) -> str:
    """``text`` with its first letter in upper case."""
    return text[:1].upper() + text[1:]


def an(word: str) -> str:
    """The indefinite article before ``word``."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def number(rng: random.Random, n: int) -> str:
    """``n`` as digits or as a word."""
    return str(n) if n not in NUMBER_WORDS or rng.random() < 0.5 else NUMBER_WORDS[n]


def say_date(rng: random.Random, iso: str) -> str:
    """A day said one of several ways, always with its year (the entry's today is not the seed's)."""
    d = date.fromisoformat(iso)
    month, short = d.strftime("%B"), d.strftime("%b")
    suffix = "th" if 4 <= d.day <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d.day % 10, "th")
    forms = (
        iso,
        f"{month} {d.day}, {d.year}",
        f"{short} {d.day}, {d.year}",
        f"{d.day} {month} {d.year}",
        f"{month} {d.day}{suffix}, {d.year}",
        f"the {d.day}{suffix} of {month} {d.year}",
        f"{d.strftime('%A')}, {month} {d.day}, {d.year}",
    )
    return rng.choice(forms)


def amount(rng: random.Random, n: int, thing: str, unit: str) -> str:
    """``n`` of ``thing``: "a Foo", "2 x Foo", "three units of Foo"."""
    if n == 1:
        forms = [f"one {thing}", f"1 {thing}", f"1 x {thing}"]
        if not PLURAL.search(thing):  # "a Beef Noodle Soup", but not "a Egg Tarts"
            forms += [f"{an(thing)} {thing}", f"a single {thing}"]
    else:
        num = number(rng, n)
        forms = [f"{num} {thing}", f"{n} x {thing}", f"{num} {unit} of {thing}", f"{num} of the {thing}"]
    return rng.choice(forms)


def product(rng: random.Random, name: str) -> str:
    """A product's name as written, or as typed in lower case."""
    return name if rng.random() < 0.75 else name.lower()


def nights(rng: random.Random, n: int) -> str:
    """A stay's length: "one night", "2 nights"."""
    return f"{number(rng, n)} night{'s' if n > 1 else ''}"


# --- the super entry ------------------------------------------------------------------------------
# Slots: {items} (quantity and product), {it} ("it" or "them"), {cheap} (how the cheaper shop is said).
BUY = (
    "Buy {items} {cheap}.",
    "Please order {items} for me {cheap}.",
    "I need {items}. Get {it} {cheap}.",
    "Could you get me {items} {cheap}?",
    "Get {items} {cheap}, thanks.",
    "Order {items} {cheap}.",
    "Pick up {items} for me.",
    "I'd like {items}, bought {cheap}.",
    "Can you buy me {items}? Whichever shop has the lowest price.",
    "Purchase {items} {cheap}, please.",
    "Grab me {items} {cheap}.",
    "Find {items} at the lowest price and buy {it}.",
    "Please buy {items}; go with the cheaper shop.",
    "Put in an order for {items}, lowest price wins.",
    "I want to buy {items}. Use whichever shop is cheaper.",
    "Order {items} in a single order from one shop, whichever sells {it} for less.",
    "{items}, please, from whichever shop is cheapest.",
    "Hey, can you order {items}? Cheapest shop is fine.",
)
CHEAP = (
    "from whichever shop sells it cheapest",
    "at the lowest price",
    "from the cheaper shop",
    "wherever the price is lowest",
    "from the shop with the lower price",
    "at the best price you can find",
    "from the least expensive shop",
    "from whichever shop is cheaper",
    "for the lowest price available",
    "where it's cheapest",
)
# Slots: {items}, {it}, {shop}.
BUY_AT = (
    "Buy {items} from {shop}.",
    "Order {items} at {shop}, please.",
    "Please get me {items} from {shop}.",
    "I want {items} from {shop}.",
    "From {shop}, order {items}.",
    "Can you buy {items} at {shop} for me?",
    "{shop} only: buy {items}.",
    "Get {items} from {shop} and nowhere else.",
    "Purchase {items} at {shop}.",
    "I'd like to order {items} from {shop}, please.",
    "Use {shop} to buy {items}.",
    "Buy {items}; it has to be from {shop}.",
    "Order {items} for me, from {shop} please.",
)
SHOP_NAMES = {
    "northwind": ("Northwind", "Northwind Shop", "the Northwind shop"),
    "lakeside": ("Lakeside", "Lakeside Mart", "the Lakeside shop"),
}
# Slots: {a}, {b} (cities), {date}.
FLIGHT = {
    "cheapest": (
        "Book the cheapest flight from {a} to {b} on {date}.",
        "Book me the lowest-priced flight from {a} to {b} on {date}.",
        "I need to fly {a} to {b} on {date}; get me the cheapest seat.",
        "Please book a seat on the cheapest {a} to {b} flight on {date}.",
        "Find the cheapest flight from {a} to {b} on {date} with seats left and book it.",
        "On {date}, book me the cheapest flight from {a} to {b}.",
        "Get me a ticket from {a} to {b} on {date}, lowest price please.",
        "Fly me from {a} to {b} on {date} on the cheapest flight.",
        "Could you book the least expensive flight from {a} to {b} for {date}?",
        "I'm flying from {a} to {b} on {date}. Book whichever flight is cheapest.",
        "Reserve one seat on the cheapest flight from {a} to {b} on {date}.",
        "Cheapest flight {a} to {b} on {date}, please book it.",
    ),
    "earliest": (
        "Book the earliest flight from {a} to {b} on {date}.",
        "I need to be in {b} early on {date}: book the first flight from {a}.",
        "Get me on the first flight out of {a} to {b} on {date}.",
        "Book the earliest available flight from {a} to {b} on {date}.",
        "On {date}, put me on the earliest flight from {a} to {b}.",
        "Please book the first {a} to {b} flight of the day on {date}.",
        "Book me the earliest departure from {a} to {b} on {date} that still has seats.",
        "I want to leave {a} as early as possible on {date}; book the earliest flight to {b}.",
        "Fly me to {b} from {a} on {date}, on the earliest flight.",
        "Could you book the day's first flight from {a} to {b} on {date}?",
        "Reserve a seat on the earliest flight from {a} to {b}, {date}.",
        "Earliest flight from {a} to {b} on {date}, please.",
    ),
}
# Slots: {city}, {nights} ("two nights").
HOTEL = (
    "Book the cheapest hotel in {city} for {nights}.",
    "I need a hotel in {city} for {nights}; the cheapest one with a free room.",
    "Find me the cheapest place to stay in {city} for {nights} and book it.",
    "Please book {nights} at the lowest-priced hotel in {city}.",
    "Reserve a room in {city} for {nights}, cheapest hotel please.",
    "Book me a room for {nights} in {city} at whichever hotel is cheapest.",
    "Get me the least expensive hotel room in {city}, {nights}.",
    "Cheapest hotel in {city} with rooms left, {nights}, please.",
    "Could you book a hotel in {city} for {nights}? Go for the lowest price.",
    "I'm staying in {city} for {nights}. Book the cheapest hotel.",
    "{nights} in {city}: book the cheapest hotel that has a room.",
    "Book a budget stay in {city}: the cheapest hotel, {nights}.",
)
# Slots: {a}, {b}, {date}, {pick} ("cheapest" or "earliest"), {nights}.
TRIP = (
    "Book the {pick} flight from {a} to {b} on {date} and the cheapest hotel in {b} for {nights}.",
    "I'm going to {b}: book the {pick} flight from {a} on {date} and the cheapest hotel there for {nights}.",
    "Plan my trip: the {pick} flight {a} to {b} on {date}, plus {nights} at the cheapest hotel in {b}.",
    "Fly me from {a} to {b} on {date} on the {pick} flight, and book the cheapest hotel in {b} for {nights}.",
    "On {date} I fly {a} to {b}. Book the {pick} flight and the lowest-priced hotel in {b}, {nights}.",
    "Please book a trip: {a} to {b} on {date} (the {pick} flight) and {nights} in {b}'s cheapest hotel.",
    "Get me to {b} from {a} on {date} on the {pick} flight and find the cheapest room there for {nights}.",
    "Book the {pick} seat from {a} to {b} on {date}, and {nights} at the cheapest hotel in {b}.",
)
# Slots: {dishes}, {cw} (the cuisine as a word: "noodle", "Cantonese"), {city}.
FOOD = (
    "Order {dishes} from the nearest {cw} restaurant in {city}.",
    "I'm hungry. Get me {dishes} from the closest open {cw} place, delivered in {city}.",
    "Please have {dishes} delivered to me in {city} from the nearest {cw} restaurant.",
    "Deliver {dishes} from the closest {cw} restaurant to my place in {city}.",
    "Can you order {dishes}? The nearest {cw} place in {city} that's open.",
    "{city} delivery: {dishes} from the nearest {cw} restaurant, please.",
    "Get {dishes} from whichever {cw} restaurant is closest to me in {city}.",
    "I want {dishes} for dinner from the nearest open {cw} restaurant in {city}.",
    "Order in {dishes} from a {cw} place near me in {city}, the closest one.",
    "From the nearest {cw} restaurant in {city}, order {dishes}.",
    "Lunch please: {dishes}, from the closest {cw} spot in {city}.",
    "Send {dishes} to my place in {city} from the nearest {cw} restaurant that's open.",
    "Could you get {dishes} delivered? I'm in {city}; the nearest {cw} restaurant will do.",
)
CUISINE_WORDS = {
    "noodles": ("noodle", "noodle"),
    "cantonese": ("Cantonese", "dim sum"),
    "sichuan": ("Sichuan", "Sichuan hotpot"),
    "salad": ("salad", "salad"),
    "seafood": ("seafood", "seafood"),
}
# Asking, buying nothing. Slots: {name} (a product).
INFO_PRODUCT = (
    "Which shop sells the {name} cheaper? Just tell me, don't buy it.",
    "How much is the {name} at the cheapest shop? I'm only asking.",
    "What's the lowest price for the {name}? Don't order anything.",
    "Where can I get the {name} for less, and for how much? No purchase, please.",
    "Compare the two shops for the {name} and tell me which is cheaper. Don't buy it yet.",
    "Is the {name} in stock anywhere, and what's the best price? Don't buy it.",
    "Just checking, not buying: which shop has the cheapest {name}?",
    "Don't order it, but tell me where the {name} is cheapest.",
    "Find the lowest price for the {name} and tell me; I'll decide later, so don't buy.",
    "What would the {name} cost me at the cheaper shop? I'm only looking.",
    "Price check on the {name}: which shop is cheaper? No need to buy.",
    "Tell me which shop has the {name} at the lowest price, without ordering it.",
)
# Slots: {a}, {b}, {date}.
INFO_FLIGHT = {
    "cheapest": (
        "What is the cheapest flight from {a} to {b} on {date}? Just tell me, don't book it.",
        "How much is the cheapest seat from {a} to {b} on {date}? I'm only asking.",
        "Which flight from {a} to {b} on {date} is cheapest with seats left? Don't book anything.",
        "Find the lowest fare from {a} to {b} on {date}, but don't book it yet.",
        "Just looking: what's the cheapest {a} to {b} flight on {date}?",
        "Tell me the cheapest flight {a} to {b} on {date}, without booking.",
    ),
    "earliest": (
        "Which is the earliest flight from {a} to {b} on {date} with seats left? Don't book anything.",
        "What's the first flight from {a} to {b} on {date}? Just tell me, no booking.",
        "Find the earliest flight from {a} to {b} on {date}, but don't book it.",
        "How early can I fly from {a} to {b} on {date}? I'm only asking, don't book.",
        "Tell me the earliest departure from {a} to {b} on {date} that still has a seat. Don't book it.",
        "Just checking: the earliest {a} to {b} flight on {date}?",
    ),
}
# Slots: {city}, {nights}.
INFO_HOTEL = (
    "How much is {nights} at the cheapest hotel in {city} that still has rooms? I'm only asking.",
    "Which is the cheapest hotel in {city} with a free room for {nights}? Don't book it.",
    "What would {nights} in the cheapest hotel in {city} cost? Just tell me.",
    "Find the lowest-priced hotel in {city} for {nights}, but don't book anything yet.",
    "Tell me the cheapest hotel in {city} for {nights} without booking it.",
    "Just curious: where's the cheapest place to stay in {city} for {nights}? No booking.",
)
# Slots: {cw}, {city}, {dish}.
INFO_FOOD = (
    "Which {cw} restaurant near me in {city} is the closest one that's open? Don't order anything.",
    "What's the nearest open {cw} place in {city}? Just tell me, I'm not ordering yet.",
    "Find the closest {cw} restaurant in {city} that's open now, but don't order.",
    "Where's the nearest {cw} restaurant in {city} that would deliver {dish}? Only asking.",
    "Which open {cw} place in {city} is closest and has {dish}? Don't place an order.",
    "Tell me the nearest {cw} restaurant in {city} with {dish} on the menu, without ordering.",
)
# Products no shop sells: near misses of real names, and things neither shop carries.
MADE_UP_PRODUCTS = (
    "Aurora X3 Wireless Earbuds",
    "Aurora X2 Lite Wireless Earbuds",
    "Sonic Wave In-Ear Headphones",
    "Pebble 30000mAh Power Bank",
    "Pebble 5000mAh Power Bank",
    "Lumen 32-inch 4K Monitor",
    "Lumen 27-inch Curved Monitor",
    "Kestrel K9 Mechanical Keyboard",
    "Kestrel M5 Gaming Mouse",
    "Nimbus 13 Laptop 8GB",
    "Nimbus 14 Laptop 32GB",
    "Orchid Smartphone 512GB",
    "Orchid Phone Case Black",
    "Jade Jasmine Tea 250g",
    "Harbor Espresso Beans 500g",
    "Summit Running Shoes Size 44",
    "Summit Trail Shoes Size 42",
    "Cedar Carbon Steel Wok 32cm",
    "Cedar Pressure Cooker 5L",
    "Willow Floor Lamp",
    "Willow Humidifier",
    "Atlas Duffel Bag 40L",
    "Quill Ballpoint Pen Set",
    "Zephyr Electric Scooter",
    "Polaris Mini Drone",
    "Comet Smartwatch S2",
    "Ember Electric Kettle 1.7L",
    "Glacier Water Bottle 1L",
    "Nova E-Reader 7",
    "Falcon Bike Helmet",
)
CITIES_WITHOUT_HOTELS = ("Guangzhou", "Nanjing", "Xiamen", "Wuhan", "Suzhou", "Qingdao", "Kunming", "Harbin")
CITIES_WITHOUT_FLIGHTS = ("Guangzhou", "Nanjing", "Wuhan", "Kunming")

# --- the compiler ---------------------------------------------------------------------------------
# (phrase, cron) at 2026-11-23T10:00+08:00, a Monday, in Asia/Shanghai.
CRON = (
    ("every weekday at 8", "0 8 * * 1-5"),
    ("every weekday at 8:30", "30 8 * * 1-5"),
    ("each weekday at 7:45", "45 7 * * 1-5"),
    ("every weekday morning", "0 6 * * 1-5"),
    ("each Monday at 9am", "0 9 * * 1"),
    ("every Monday", "0 9 * * 1"),
    ("every Tuesday at 14:15", "15 14 * * 2"),
    ("weekly on Wednesday at 6pm", "0 18 * * 3"),
    ("every Thursday at noon", "0 12 * * 4"),
    ("every Friday at 17:00", "0 17 * * 5"),
    ("every Saturday at 10am", "0 10 * * 6"),
    ("every Sunday evening", "0 18 * * 0"),
    ("every Monday and Thursday at 7:30", "30 7 * * 1,4"),
    ("every weekend at 10", "0 10 * * 0,6"),
    ("every Saturday and Sunday at 9", "0 9 * * 0,6"),
    ("daily at 7pm", "0 19 * * *"),
    ("every day at 18:00", "0 18 * * *"),
    ("every day at noon", "0 12 * * *"),
    ("at 8am every day", "0 8 * * *"),
    ("every morning at 7", "0 7 * * *"),
    ("each morning at 6:30", "30 6 * * *"),
    ("every evening at 9", "0 21 * * *"),
    ("every night at 11pm", "0 23 * * *"),
    ("on the 1st of every month", "0 9 1 * *"),
    ("monthly", "0 9 1 * *"),
    ("on the 15th of each month at 10", "0 10 15 * *"),
    ("every first Monday of the month at 9", "0 9 * * 1#1"),
    ("every year on March 8", "0 9 8 3 *"),
)
# (phrase, seconds).
INTERVAL = (
    ("every 5 minutes", 300),
    ("every 10 minutes", 600),
    ("every 15 minutes", 900),
    ("every 20 minutes", 1200),
    ("every 30 minutes", 1800),
    ("every 45 minutes", 2700),
    ("hourly", 3600),
    ("every hour", 3600),
    ("once an hour", 3600),
    ("every 90 minutes", 5400),
    ("every two hours", 7200),
    ("every three hours", 10800),
    ("every 6 hours", 21600),
    ("every 12 hours", 43200),
    ("every other day", 172800),
)
# One-time phrases; the trigger's instant is what the time library reads.
ONCE = (
    "tomorrow at 9",
    "tomorrow at 18:30",
    "tomorrow morning",
    "in two hours",
    "in 30 minutes",
    "in 45 minutes",
    "in an hour",
    "in 3 days",
    "tonight at 8",
    "this evening at 7",
    "at 3pm today",
    "at 5pm",
    "on Friday at noon",
    "next Wednesday at 10am",
    "next Monday at 8",
    "on December 1 at 9am",
)
# Agent actions: (tools, when it makes sense to run, templates). "watch" runs on any schedule;
# "report" on a calendar, once or now; "act" once, now or on a calendar.
ACTIONS: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = (
    (
        ("shop.search",),
        "watch",
        (
            "check the price of the {product} in both shops",
            "look up what the {product} costs at {shop}",
            "compare the price of the {product} at Northwind and Lakeside",
            "check whether the {product} is in stock anywhere",
            "see if the {product} is back in stock at {shop}",
        ),
    ),
    (
        ("shop.search", "notify.owner"),
        "watch",
        (
            "check the price of the {product} and tell me when it is under {yuan} yuan",
            "look up the {product} in both shops and alert me if either sells it for less than {yuan} yuan",
            "check whether the {product} is back in stock and let me know",
        ),
    ),
    (
        ("shop.search", "shop.buy"),
        "act",
        (
            "buy the {product} from whichever shop sells it cheaper",
            "order one {product} at the lowest price",
            "buy {count} {product} from the cheaper shop",
            "get me the {product} from {shop} if it is in stock",
        ),
    ),
    (
        ("shop.product",),
        "watch",
        (
            "check the price history of product {sku}",
            "look at the details of {sku}",
            "see how the price of {sku} changed this month",
        ),
    ),
    (
        ("shop.orders",),
        "watch",
        ("check the status of my shop orders", "see whether my {shop} order has shipped"),
    ),
    (
        ("wallet.balance",),
        "watch",
        ("check my wallet balance", "look at how much money is left in my wallet", "see what my balance is"),
    ),
    (
        ("wallet.transactions",),
        "report",
        (
            "summarise my wallet spending",
            "list my recent wallet transactions",
            "go through the payments out of my wallet",
        ),
    ),
    (
        ("wallet.pay",),
        "act",
        (
            "pay {person} {yuan} yuan for {reason}",
            "send {person} {yuan} yuan from my wallet for {reason}",
            "transfer {yuan} yuan to {person}",
        ),
    ),
    (
        ("food.search",),
        "report",
        (
            "find {cuisine} restaurants near me that are open",
            "list the places near my home that deliver {dish}",
            "look up which restaurants near my home are open",
        ),
    ),
    (
        ("food.search", "food.order"),
        "act",
        ("order {dish} from {restaurant}", "get {count} {dish} delivered from {restaurant}"),
    ),
    (
        ("food.status",),
        "watch",
        (
            "check where my food delivery is",
            "see whether my dinner order is on the way",
            "track my food order",
        ),
    ),
    (
        ("travel.flights",),
        "watch",
        (
            "check flights from {a} to {b} on {date}",
            "look for free seats on flights from {a} to {b}",
            "look up the cheapest flight from {a} to {b}",
        ),
    ),
    (
        ("travel.flights", "travel.book"),
        "act",
        ("book the cheapest flight from {a} to {b} on {date}", "book the earliest flight from {a} to {b}"),
    ),
    (
        ("travel.hotels",),
        "watch",
        (
            "look up hotels in {city}",
            "check room prices at hotels in {city}",
            "find the cheapest hotel in {city} with rooms",
        ),
    ),
    (
        ("travel.hotels", "travel.book"),
        "act",
        ("book the cheapest hotel in {city} for {count} nights", "reserve a room at {hotel}"),
    ),
    (
        ("travel.bookings",),
        "report",
        ("look at my upcoming trips", "list my flight and hotel bookings", "check my travel bookings"),
    ),
    (
        ("weather.forecast",),
        "report",
        (
            "check the weather in {city}",
            "get the forecast for {city}",
            "check the air quality in {city}",
            "see whether it will rain in {city}",
        ),
    ),
    (
        ("news.search",),
        "watch",
        (
            "look for news about {topic}",
            "find the latest headlines on {topic}",
            "search the news for {topic}",
        ),
    ),
    (
        ("calendar.events",),
        "report",
        ("check my calendar for the week", "look at the events in my calendar", "go through my agenda"),
    ),
    (
        ("calendar.add",),
        "act",
        ("add '{title}' to my calendar", "put an event called '{title}' in my calendar"),
    ),
    (
        ("fx.rate",),
        "watch",
        ("check the {base} to {quote} exchange rate", "look up how many {quote} one {base} buys"),
    ),
    (
        ("time.now", "notify.owner"),
        "report",
        ("tell me the current date and time", "look up the current time and send it to me as a notification"),
    ),
    (
        ("agent.message",),
        "act",
        (
            "send the agent '{agent}' a message asking for {want}",
            "message the {agent} agent to ask for {want}",
        ),
    ),
    (
        ("process.spawn",),
        "act",
        ("run the {agent} agent on {want} and wait for its answer", "start the {agent} agent to get {want}"),
    ),
    (
        ("notify.owner",),
        "remind",
        (
            "remind me to {chore}",
            "send me a reminder to {chore}",
            "tell me to {chore}",
            "notify me that it is time to {chore}",
            "alert me to {chore}",
            "let me know it's time to {chore}",
        ),
    ),
    (
        ("mail.send",),
        "act",
        (
            "email {email} that {message}",
            "send an email to {email} saying {message}",
            "write to {email} to say {message}",
        ),
    ),
)
# Follow-ups that add a tool: (tool, the modes of action they fit, templates).
FOLLOW_UPS = (
    ("notify.owner", "watch report act", (" and tell me", " and notify me", " and let me know")),
    ("notify.owner", "watch report", (" and send me the result", " and alert me if anything changes")),
    ("mail.send", "watch report", (" and email the result to {email}", " and send a summary to {email}")),
    ("mail.send", "watch report act", (" and mail it to {email}", " and email {email} about it")),
    ("calendar.add", "act", (" and put it in my calendar", " and add it to my calendar as an event")),
)
COMPILER_WORDS = {
    "person": ("bob", "carol", "alice", "my sister", "the landlord"),
    "reason": ("the rent", "the cleaning", "the groceries", "the taxi", "the concert tickets", "the gym"),
    "email": ("me@example.com", "team@example.com", "ana@example.com", "boss@example.com", "sam@example.com"),
    "topic": (
        "Pearl Air",
        "electric cars",
        "the Hangzhou metro",
        "Lumen monitors",
        "interest rates",
        "Chengdu pandas",
        "typhoons",
    ),
    "base": ("USD", "EUR", "JPY", "GBP"),
    "quote": ("CNY",),
    "chore": (
        "call the landlord",
        "water the plants",
        "take my vitamins",
        "pay the electricity bill",
        "stand up and stretch",
        "book a haircut",
        "back up my laptop",
        "renew my passport",
        "feed the cat",
        "take out the recycling",
        "submit my timesheet",
        "call my parents",
    ),
    "message": (
        "the office is closed",
        "the report is ready",
        "I am running late",
        "the meeting moved to room 4",
        "the invoice has been paid",
    ),
    "title": ("Team lunch", "Dentist", "Gym session", "Parents' visit", "Project review"),
    "agent": ("price-watcher", "news-digest", "trip-planner", "expense-tracker"),
    "want": ("today's best deals", "a news summary", "a trip plan for Beijing", "last week's spending"),
}
GIBBERISH_SYLLABLES = (
    "blor",
    "qua",
    "zip",
    "trel",
    "vosk",
    "mip",
    "drag",
    "ul",
    "fen",
    "kwo",
    "snar",
    "plix",
)
# Nearly empty, and too vague for any tool (a description with no words is held out: "" and "?!").
ERROR_DESCRIPTIONS = (
    ("ok", "nearly empty"),
    ("hmm", "nearly empty"),
    ("hi", "nearly empty"),
    ("test", "nearly empty"),
    ("x", "nearly empty"),
    ("ok then", "nearly empty"),
    ("help me", "too vague"),
    ("do something useful", "too vague"),
    ("the usual", "too vague"),
    ("make it better", "too vague"),
    ("handle it", "too vague"),
    ("stuff", "too vague"),
    ("you decide", "too vague"),
)
UNSUPPORTED_SCHEDULES = (
    "Every other Tuesday at 9, check my wallet balance",
    "Every day until May, look up the weather in Hangzhou and tell me",
    "Every day except Fridays at 8, remind me to stand up and stretch",
    "Every other Friday at 18:00, email me@example.com my wallet transactions",
)
UNKNOWN_ZONES = ("Mars/Olympus", "Moon/Tranquility", "Atlantis/Capital", "Asia/Nowhere")
# Dates and times that are what the task is about, not when to run it: (tools, templates). The agent
# runs when asked, so the trigger meant is none, though the time library reads a one-time one in most.
# Slots: those of ACTIONS, and DATE_OBJECT_WORDS'.
DATE_OBJECT: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("travel.flights", "travel.book"),
        (
            "book me a seat on the earliest flight from {a} to {b} on {fday}",
            "get me the cheapest ticket from {a} to {b} for {fday}",
            "I'm flying {a} to {b} on {fday}: pick the cheapest flight with seats and book it",
            "reserve a seat from {a} to {b} on {fday}, whichever flight leaves first",
        ),
    ),
    (("travel.flights",), ("show me which flights go from {a} to {b} on {fday}",)),
    (
        ("travel.flights", "mail.send"),
        ("look for flights from {a} to {b} on {fday} and send the times and prices to {email}",),
    ),
    (
        ("travel.hotels", "travel.book"),
        (
            "reserve a room at {hotel} for {count} nights from {hday}",
            "book me into {hotel} for one night, checking in on {hday}",
            "get me the lowest-priced room in {city} for {hday} and book it",
        ),
    ),
    (
        ("travel.hotels", "mail.send"),
        ("find hotels in {city} with free rooms on {hday} and email the list to {email}",),
    ),
    (
        ("travel.bookings", "calendar.add"),
        (
            "add my stay at {hotel} on {hday} to my calendar",
            "copy my {a} to {b} flight on {fday} into my calendar",
        ),
    ),
    (
        ("calendar.add",),
        (
            "put '{title}' in my calendar on {cday} at {ctime}",
            "create a calendar event called '{title}' for {cday} at {ctime}",
            "pencil in a {appointment} at {ctime} on {cday}",
            "make a calendar entry '{title}' at {place} on {cday}, starting at {ctime}",
        ),
    ),
    (("calendar.events",), ("check what's in my calendar on {cday}", "list my meetings for {wday}")),
    (("calendar.events", "mail.send"), ("email {email} my calendar events for {cday}",)),
    (
        ("weather.forecast",),
        (
            "check the forecast for {city} for {wday}",
            "find out the temperatures in {city} for {wday}",
            "look up the chance of rain in {city} on {cday}",
        ),
    ),
    (("weather.forecast", "mail.send"), ("send {email} the weather forecast for {city} for {wday}",)),
    (
        ("food.search", "food.order"),
        ("order {dish} from {restaurant} with a note asking for delivery at {ftime}",),
    ),
    (
        ("mail.send",),
        (
            "email {email} that the meeting moved to {cday} at {ctime}",
            "send {email} an email saying the office is closed on {cday}",
            "write to {email} that my flight lands at {ctime} on {fday}",
            "let {email} know by email that I'll be in {city} on {hday}",
        ),
    ),
)
DATE_OBJECT_WORDS = {
    # The days the seed's flights leave, said several ways; stays, meetings and forecasts any day.
    "fday": ("December 5", "December 6", "Dec 5", "Dec 6", "December 5th", "the 6th of December"),
    "hday": ("December 5", "Dec 12", "December 19", "the 5th of December", "Saturday", "Friday"),
    "cday": ("Thursday", "Wednesday", "December 3", "Dec 9", "the 11th of December", "Friday"),
    "wday": ("tomorrow", "Saturday", "this Sunday", "December 5", "next Tuesday", "Friday"),
    "ctime": ("9am", "10:30", "2pm", "4:15pm", "noon", "18:00", "7:45pm"),
    "ftime": ("7pm", "6:30pm", "12:15", "noon", "8pm"),
    "appointment": ("haircut", "doctor's visit", "call with the bank", "piano lesson", "car service"),
    "place": ("Room 4", "the Pine Inn", "West Lake", "the office"),
}

# --- tool calls -----------------------------------------------------------------------------------
# (tool, template, arguments): each argument names the slot whose value the request states plainly,
# or is a literal (a bool the words imply). Slot values are made by ``aigrid.learn.generate``.
TOOL_REQUESTS: tuple[tuple[str, str, dict[str, str | bool]], ...] = (
    ("shop.search", "Search the shops for the {product}.", {"query": "product"}),
    ("shop.search", "What does the {product} cost at {shop}?", {"query": "product", "shop": "shop"}),
    (
        "shop.search",
        "Find me a {product} for under {yuan} yuan.",
        {"query": "product", "max_price_cents": "yuan"},
    ),
    (
        "shop.search",
        "Which shops have the {product} in stock right now?",
        {"query": "product", "in_stock": True},
    ),
    ("shop.product", "Show me the details and price history of {sku}.", {"sku": "sku"}),
    ("shop.product", "How many of product {sku} are in stock?", {"sku": "sku"}),
    ("shop.buy", "Buy {count} of {sku} for me.", {"sku": "sku", "quantity": "count"}),
    ("shop.buy", "Order product {sku}, quantity {count}.", {"sku": "sku", "quantity": "count"}),
    (
        "shop.buy",
        "Place an order for {sku}, but not if it costs more than {yuan} yuan.",
        {"sku": "sku", "max_price_cents": "yuan"},
    ),
    ("shop.orders", "List my {status} shop orders.", {"status": "status"}),
    ("shop.orders", "Show my last {count} shop orders.", {"limit": "count"}),
    ("wallet.balance", "How much money is in my wallet?", {}),
    ("wallet.balance", "What's my wallet balance right now?", {}),
    ("wallet.balance", "How much can I still spend from my wallet?", {}),
    ("wallet.balance", "Tell me my balance, please.", {}),
    ("wallet.balance", "Is there enough money left in my wallet? Just the balance.", {}),
    ("wallet.transactions", "List my wallet transactions since {date}.", {"since": "date"}),
    ("wallet.transactions", "Show my last {count} wallet payments.", {"limit": "count"}),
    (
        "wallet.transactions",
        "What did I spend between {date} and {date2}?",
        {"since": "date", "until": "date2"},
    ),
    ("wallet.pay", "Pay {person} {yuan} yuan.", {"to": "person", "amount_cents": "yuan"}),
    (
        "wallet.pay",
        "Send {yuan} yuan to {person} for {reason}.",
        {"to": "person", "amount_cents": "yuan", "note": "reason"},
    ),
    (
        "wallet.pay",
        "Transfer {yuan} yuan from my wallet to {person}.",
        {"to": "person", "amount_cents": "yuan"},
    ),
    ("food.search", "Find {dish} near me in {food_city}.", {"query": "dish", "city": "food_city"}),
    (
        "food.search",
        "Which {cuisine} restaurants in {city} are open now?",
        {"query": "cuisine", "city": "city", "open_now": True},
    ),
    ("food.order", "Order {count} {dish} from restaurant {rid}.", {"restaurant_id": "rid"}),
    ("food.status", "Where is my food order {order}?", {"order_id": "order"}),
    ("food.status", "Has delivery {order} left the restaurant yet?", {"order_id": "order"}),
    (
        "travel.flights",
        "Show me flights from {a} to {b} on {date}.",
        {"from": "a", "to": "b", "date": "date"},
    ),
    (
        "travel.flights",
        "Any flights from {a} to {b} on {date} under {yuan} yuan?",
        {"from": "a", "to": "b", "date": "date", "max_price_cents": "yuan"},
    ),
    (
        "travel.flights",
        "I want to fly from {a} to {b} on {date}; what are my options?",
        {"from": "a", "to": "b", "date": "date"},
    ),
    (
        "travel.hotels",
        "Find hotels in {city} for {count} nights from {date}.",
        {"city": "city", "check_in": "date", "nights": "count"},
    ),
    (
        "travel.hotels",
        "Are there {stars}-star hotels in {city} with rooms on {date}?",
        {"city": "city", "check_in": "date", "min_stars": "stars"},
    ),
    ("travel.book", "Book flight {flight} for me.", {"flight_id": "flight"}),
    (
        "travel.book",
        "Book hotel {hotel} for {count} nights from {date}.",
        {"hotel_id": "hotel", "nights": "count", "check_in": "date"},
    ),
    ("travel.bookings", "What trips do I have booked?", {}),
    ("travel.bookings", "Show me my flight and hotel bookings.", {}),
    ("travel.bookings", "List my upcoming bookings.", {}),
    ("travel.bookings", "Which flights and hotels have I booked so far?", {}),
    ("travel.bookings", "Do I have any hotel stays coming up?", {}),
    ("weather.forecast", "What's the weather in {city}?", {"city": "city"}),
    ("weather.forecast", "Give me the {days}-day forecast for {city}.", {"city": "city", "days": "days"}),
    ("news.search", "Find news about {topic}.", {"query": "topic"}),
    (
        "news.search",
        "Any headlines on {topic} from the last {hours} hours?",
        {"query": "topic", "since_hours": "hours"},
    ),
    (
        "mail.send",
        "Email {email} with the subject '{subject}' saying {message}.",
        {"to": "email", "subject": "subject"},
    ),
    ("mail.send", "Send {email} an email: {message}.", {"to": "email"}),
    (
        "calendar.add",
        "Add '{title}' to my calendar at {time} on {day}.",
        {"title": "title", "start": "start"},
    ),
    (
        "calendar.add",
        "Put '{title}' at {place} in my calendar for {day} at {time}.",
        {"title": "title", "location": "place", "start": "start"},
    ),
    ("calendar.events", "What's in my calendar between {day} and {day2}?", {"from": "day", "to": "day2"}),
    ("fx.rate", "What's the {base} to {quote} exchange rate?", {"base": "base", "quote": "quote"}),
    ("fx.rate", "How many {quote} is one {base} right now?", {"base": "base", "quote": "quote"}),
)
TOOL_WORDS = {
    "status": ("shipped", "delivered", "cancelled", "paid"),
    "subject": ("Office closed", "Report ready", "Running late", "Invoice paid"),
    "place": ("Room 4", "the Pine Inn", "West Lake", "the office"),
    "time": ("09:00", "15:00", "18:30", "11:15"),
}
