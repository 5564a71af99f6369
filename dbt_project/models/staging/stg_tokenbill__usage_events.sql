-- Typed, deduplicated usage events (see macros/usage_events.sql), all of history.

with

{{ usage_events_deduplicated() }}

select * from deduplicated
