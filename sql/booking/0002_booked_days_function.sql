-- The booked days of a room in a month, computed from the bookings: the one
-- definition that availability_compute caches and availability_booked_days
-- answers with (checks, and a recompute that lost a race). A confirmed booking
-- occupies its nights: check-in day included, check-out day not ('[)').
CREATE FUNCTION booking.booked_days(p_room_id integer, p_month date) RETURNS date[]
-- STABLE: it reads with the calling statement's snapshot, which the cached
-- generation is read in too (availability_compute).
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(array_agg(day::date ORDER BY day), '{}')
    FROM generate_series(p_month, p_month + interval '1 month' - interval '1 day', interval '1 day') AS day
    WHERE EXISTS (
        SELECT 1 FROM booking.bookings b
        WHERE b.room_id = p_room_id AND b.status = 'confirmed'
          AND daterange(b.check_in, b.check_out, '[)') @> day::date
    )
$$;
