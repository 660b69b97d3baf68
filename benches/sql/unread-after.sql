-- The all-channel unread as hotchan runs it now (LATERAL count per membership), for
-- pgbench against a scale database; run with PGOPTIONS="-c jit=off", as hotchan does.
\set j random(0, 999)
SELECT cm.channel_id, u.unread_count FROM channel_members cm CROSS JOIN LATERAL (SELECT count(*) FROM messages m WHERE m.channel_id = cm.channel_id AND m.id > COALESCE(cm.last_read_message_id, 0) AND m.deleted_at IS NULL AND m.sender_id <> cm.user_id) AS u(unread_count) WHERE cm.user_id = ('be9c0001-0000-4000-8000-' || lpad(to_hex(:j), 12, '0'))::uuid AND u.unread_count > 0 ORDER BY cm.channel_id;
