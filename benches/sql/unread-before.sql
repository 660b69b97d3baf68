-- The all-channel unread before issue 8 (join + GROUP BY), for pgbench against a scale
-- database (users be9c0001-…-000000000000 to …3e7, as hotchan bench --scale 10m seeds).
\set j random(0, 999)
SELECT cm.channel_id, COUNT(m.id) AS unread_count FROM channel_members cm JOIN messages m ON m.channel_id = cm.channel_id AND m.id > COALESCE(cm.last_read_message_id, 0) AND m.deleted_at IS NULL AND m.sender_id != cm.user_id WHERE cm.user_id = ('be9c0001-0000-4000-8000-' || lpad(to_hex(:j), 12, '0'))::uuid GROUP BY cm.channel_id HAVING COUNT(m.id) > 0 ORDER BY cm.channel_id;
