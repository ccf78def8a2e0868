"""Conversation-level grooming detection: per (child, contact) pair, a bounded window of recent direct
messages' signals, aggregated into a pair risk that can cross the review or alert threshold when no single
message is blocked.

Grooming shows as a pattern over many messages (O'Connell 2003; Winters & Jeglic 2017): friendship
forming, relationship forming, risk assessment ("are your parents around?"), exclusivity and secrecy,
isolation (another app, meeting) and a sexual stage. Each message gets:

- a contrastive bank score, as Roblox Sentinel does: the message embedding's highest cosine similarity to
  a bank of known grooming messages minus its highest similarity to a bank of benign ones, and the
  grooming stage of the nearest grooming example;
- the rules and model categories behind the Screener's verdict (its signals' sources, ``rule:<id>`` and
  ``model:<category>``: off-platform lures, personal information, secrecy and photo requests), so there
  is no second rule engine;
- whether it was sent late at night in the child's time zone (UTC unless the profile gives one).

The pair adds context: age gap, not friends, how recently the pair first talked, and a move from a public
room to direct messages: per room, each recent speaker's last message is kept (``room_meetings``), and a
child and a much older user writing there within ``room_meeting_window_ms`` of each other "meet"; the
meeting goes to their pair, and a first direct message within ``room_move_ms`` after it is the move.

Score (all parts in [0, 1]; weights in ``GroomingSettings``):

    evidence    = 1 - prod(1 - message_weight * e_i)  over the contact's messages in the window, where e_i
                  is the strongest of the message's bank score and rule/model signals (noisy-OR: many
                  mild messages add up, one strong message alone does not decide)
    progression = min(1, distinct grooming stages seen / stages_for_full_progression)
    content     = content_weight * evidence + (1 - content_weight) * progression
    context     = min(1, age_gap_weight * age_gap + stranger_weight * not_friends + new_contact_weight * new
                  + room_move_weight * moved_from_room + late_night_weight * share of the contact's messages
                  sent late at night)
    risk        = content * (context_floor + (1 - context_floor) * context)

A same-age friend conversation by day has context 0, so its risk stays under ``context_floor`` (0.35), and
at night under 0.42: below the review threshold whatever its words (single harmful messages between
friends are the Screener's job). A new contact and a move from a room count only for someone not on the
child's friend list.

Modules: ``settings`` (stages, signal strengths, weights), ``bank`` (the contrastive message bank), ``turns``
(one direct message as the pair sees it), ``rooms`` (who meets whom), ``pairs`` (the window, the risk, the
outputs). Nothing here imports pyflink; ``jobs.operators`` holds the pair state in Flink state and calls these.
"""
