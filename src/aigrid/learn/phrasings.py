"""The words ``aigrid.learn.generate`` makes training tasks of: templates, made-up names, ways to say things.

Templates are ``str.format`` strings; a template may leave out any of the slots its family offers.
The entry's families have at least twelve each, varying word order, politeness and how a price or a
pick is said; amounts and days are said several ways too (digits or words, "2026-12-05" or "Dec 5,
2026"). Nothing here comes from a held-out file. The ``UNSEEN_*`` families at the end phrase the
entity-disjoint ``unseen`` split only: no training task is made with them, so that split measures
new wordings as well as new entities.
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


# --- the unseen split only -------------------------------------------------------------------------
# Written for ``entry_unseen.jsonl`` and never used for training; the slots are those of the
# training family of the same name without ``UNSEEN_``. Food templates say the cuisine as a place
# ("{cw} place"), which is how ``aigrid.learn.suites.held_out`` knows an unseen restaurant's.
UNSEEN_BUY = (
    "My cart should have {items} in it; buy {it} {cheap}.",
    "Go ahead and purchase {items}, {cheap}.",
    "Would you mind ordering {items} {cheap}?",
    "Time to restock: {items}, bought {cheap}.",
    "Shopping list for today: {items}. Buy {it} {cheap}.",
    "Check both shops for {items} and buy {it} {cheap}.",
    "I'm after {items}; please buy {it} {cheap}.",
    "Sort out an order of {items} for me, {cheap}.",
)
UNSEEN_CHEAP = (
    "from the shop asking less",
    "where the price tag is smaller",
    "from whoever charges less",
    "at whichever store has it for less",
    "from the store with the better price",
)
UNSEEN_BUY_AT = (
    "Stick with {shop} and buy {items}.",
    "Only {shop}, please: I want {items}.",
    "Send an order for {items} to {shop}.",
    "My usual shop is {shop}; order {items} there.",
    "Through {shop}, buy {items} for me.",
    "Could {shop} sell me {items}? Go ahead and order {it}.",
)
UNSEEN_FLIGHT = {
    "cheapest": (
        "Looking to get from {a} to {b} on {date} as cheaply as possible; book that flight.",
        "Reserve the lowest fare from {a} to {b} for {date}.",
        "Budget trip: the cheapest {a} to {b} flight, {date}. Book it for me.",
        "I'm heading from {a} to {b} on {date}; book whichever flight costs least.",
        "For {date}, grab me the least costly seat from {a} to {b}.",
    ),
    "earliest": (
        "I'm heading from {a} to {b} on {date}; book the flight that leaves first.",
        "Put me on the first departure from {a} to {b} on {date}.",
        "Early start: the first {a} to {b} flight on {date}, please book it.",
        "For {date}, book the flight from {a} to {b} that takes off earliest.",
        "Reserve me a seat from {a} to {b} on {date}, whichever flight goes first.",
    ),
}
UNSEEN_TRIP = (
    "Heading from {a} to {b} on {date}: book the {pick} flight, then {nights} at the cheapest hotel in {b}.",
    "Sort out travel from {a} to {b} on {date}: the {pick} flight, and the cheapest {b} hotel for {nights}.",
    "I need the {pick} flight from {a} to {b} on {date} plus the lowest-priced room in {b} for {nights}.",
    "Arrange it all: {a} to {b} on {date} on the {pick} flight, and {nights} at {b}'s cheapest hotel.",
)
UNSEEN_FOOD = (
    "Dinner in {city}: {dishes} from the nearest {cw} place, please.",
    "Have the closest {cw} restaurant in {city} bring me {dishes}.",
    "Place a delivery order of {dishes} with the nearest open {cw} spot in {city}.",
    "Hungry in {city}; order {dishes} from whichever {cw} place is closest.",
    "I'd like {dishes} brought over from the nearest {cw} restaurant in {city}.",
)
UNSEEN_INFO_PRODUCT = (
    "Only curious: what's the best price on the {name} right now? Hold off on buying.",
    "Before I decide, which shop is cheaper for the {name}? No order yet.",
    "Look up the {name} in both shops and report the lower price; don't buy.",
    "What would the {name} set me back at the cheaper shop? Just asking.",
)
UNSEEN_INFO_FLIGHT = {
    "cheapest": (
        "Without booking, what's the lowest fare from {a} to {b} on {date}?",
        "Just for planning: the cheapest {a} to {b} flight on {date}, please, no booking.",
    ),
    "earliest": (
        "Without booking, what's the first flight from {a} to {b} on {date} that has a seat?",
        "Just for planning: the earliest {a} to {b} flight on {date}, please, no booking.",
    ),
}
UNSEEN_INFO_FOOD = (
    "Without ordering, which open {cw} place in {city} is closest to me?",
    "Only curious: the nearest {cw} restaurant in {city} that's open, no order.",
    "No order yet: which {cw} place in {city} nearest me has {dish}?",
    "Just asking, which is the closest open {cw} spot in {city} serving {dish}?",
)
