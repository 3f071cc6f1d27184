"""The words ``aigrid.learn.generate`` makes the compiler's and the tool-calling suites' training tasks of:
schedules, agents' actions and their follow-ups, the descriptions that should make no agent, the
dates that are a task's object, and tool requests. Nothing here comes from a held-out file.
"""

from __future__ import annotations

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
