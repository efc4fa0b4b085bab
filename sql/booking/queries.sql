-- Statements of the booking application (soleil/booking). Same format as
-- sql/queries/*.sql: `-- name: <name> :<one|many|none|rowcount>` headers,
-- loaded by soleil/booking/sql.py with soleil.runner.parse_queries.

-- name: room_upsert :one
-- Seeding: a room by name, created when missing.
INSERT INTO booking.rooms (name, capacity) VALUES (%(name)s, %(capacity)s)
ON CONFLICT (name) DO UPDATE SET capacity = excluded.capacity
RETURNING id;

-- name: user_upsert :one
-- Seeding: a user by email, created when missing.
INSERT INTO booking.users (name, email) VALUES (%(name)s, %(email)s)
ON CONFLICT (email) DO UPDATE SET name = excluded.name
RETURNING id;

-- name: room_and_user_exist :one
SELECT EXISTS (SELECT 1 FROM booking.rooms WHERE id = %(room_id)s) AS room_exists,
       EXISTS (SELECT 1 FROM booking.users WHERE id = %(user_id)s) AS user_exists;

-- name: room_lock_for_booking :one
-- The room must not change (or vanish) while a booking of it is made. A share
-- lock lets bookings of the room proceed side by side; each then updates the
-- room (room_add_booked_nights), and two of them that both hold the share lock
-- deadlock there: PostgreSQL aborts one with 40P01 and the service retries it.
SELECT id FROM booking.rooms WHERE id = %(room_id)s FOR SHARE;

-- name: booking_insert :one
-- A confirmed booking. A request_id that already booked makes this a no-op (no
-- row returned). An overlap with an active booking raises 23P01 (after waiting
-- for a concurrent overlapping insert to commit or roll back).
INSERT INTO booking.bookings
    (user_id, room_id, check_in, check_out, guest_name, guest_email, request_id, additional_data)
VALUES (%(user_id)s, %(room_id)s, %(check_in)s, %(check_out)s, %(guest_name)s, %(guest_email)s,
        %(request_id)s, %(additional_data)s::jsonb)
ON CONFLICT (request_id) DO NOTHING
RETURNING id, user_id, room_id, check_in, check_out, guest_name, guest_email, status, request_id,
          created_at;

-- name: room_add_booked_nights :none
UPDATE booking.rooms SET booked_nights = booked_nights + %(nights)s WHERE id = %(room_id)s;

-- name: booking_find_by_request :one
SELECT id, user_id, room_id, check_in, check_out, guest_name, guest_email, status, request_id,
       created_at
FROM booking.bookings
WHERE request_id = %(request_id)s;

-- name: booking_cancel :one
-- Cancel a confirmed booking; its dates become free at once.
UPDATE booking.bookings
SET status = 'cancelled', cancelled_at = now()
WHERE id = %(id)s AND status = 'confirmed'
RETURNING id, room_id, check_in, check_out;

-- name: room_remove_booked_nights :none
UPDATE booking.rooms SET booked_nights = booked_nights - %(nights)s WHERE id = %(room_id)s;

-- name: availability_cached :one
-- A cached month, only while its generation is the room's current one.
SELECT c.booked_days
FROM booking.availability_cache c
LEFT JOIN booking.availability_generations g ON g.room_id = c.room_id
WHERE c.room_id = %(room_id)s AND c.month = %(month)s
  AND c.generation = COALESCE(g.generation, 0);

-- name: availability_compute :one
-- Recompute a month's booked days and cache them under the generation read in
-- the same snapshot: if a booking commits after that snapshot, its listener
-- bumps the generation and this row is never served.
WITH generation AS (
    SELECT COALESCE(
        (SELECT generation FROM booking.availability_generations WHERE room_id = %(room_id)s), 0
    ) AS value
), booked AS (
    SELECT booking.booked_days(%(room_id)s::integer, %(month)s::date) AS days
)
INSERT INTO booking.availability_cache AS c (room_id, month, generation, booked_days)
SELECT %(room_id)s, %(month)s, generation.value, booked.days FROM generation, booked
ON CONFLICT (room_id, month) DO UPDATE
SET generation = excluded.generation, booked_days = excluded.booked_days, computed_at = now()
WHERE c.generation <= excluded.generation
RETURNING booked_days;

-- name: availability_booked_days :one
-- The same computation without the cache (for checks and for a lost race above).
SELECT booking.booked_days(%(room_id)s::integer, %(month)s::date);

-- name: availability_invalidate :none
-- Every cached month of the room becomes stale.
INSERT INTO booking.availability_generations AS g (room_id, generation) VALUES (%(room_id)s, 1)
ON CONFLICT (room_id) DO UPDATE SET generation = g.generation + 1;

-- name: booking_overlapping_pairs :one
-- The check the demo prints: pairs of active bookings of one room that overlap (must be 0).
SELECT count(*)
FROM booking.bookings a
JOIN booking.bookings b
  ON a.room_id = b.room_id AND a.id < b.id
 AND daterange(a.check_in, a.check_out, '[)') && daterange(b.check_in, b.check_out, '[)')
WHERE a.status = 'confirmed' AND b.status = 'confirmed';

-- name: booking_delete_for_rooms :rowcount
-- The demo starts from empty rooms, so a second run behaves like the first.
DELETE FROM booking.bookings WHERE room_id = ANY(%(room_ids)s::integer[]);

-- name: booking_count_for_requests :one
SELECT count(*) FROM booking.bookings WHERE request_id = ANY(%(request_ids)s::text[]);

-- name: demo_failed_jobs_high_mark :one
-- The demo counts only the failed jobs of its own run.
SELECT COALESCE(max(id), 0) FROM soleil.failed_jobs;

-- name: demo_jobs_waiting :one
SELECT count(*) FROM soleil.jobs WHERE queue = ANY(%(queues)s::text[]);

-- name: demo_booked_requests :many
SELECT request_id FROM booking.bookings WHERE request_id = ANY(%(request_ids)s::text[]);

-- name: demo_failed_booking_requests :many
SELECT payload->>'request_id' FROM soleil.failed_jobs
WHERE id > %(after_id)s AND job = 'booking.create';

-- name: demo_failed_jobs_count :one
SELECT count(*) FROM soleil.failed_jobs WHERE id > %(after_id)s;

-- name: demo_bookings_in_rooms :one
SELECT count(*) FROM booking.bookings WHERE room_id = ANY(%(room_ids)s::integer[]) AND status = 'confirmed';
