-- hotchan schema, version 7: cache notices name what they cover. A notice about a user's
-- hot feed or one event's body carries its scope (`f:<user id>`, `e:<event id>`) here and
-- NULL in `channel_id`; an instance of an older version reads such a row as "every
-- channel", which is safe (it drops more than it must).
ALTER TABLE cache_notices ADD COLUMN scope TEXT;
