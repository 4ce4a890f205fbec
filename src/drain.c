/*
 * Draining at transaction boundaries. Two hooks catch boundaries as they
 * happen (server_release_if_done() after a ReadyForQuery 'I', client_forward()
 * before an idle client asks for a server), so a busy client never starts
 * another transaction; the janitor tick closes clients that sit idle or wait
 * for a server or a login, and ends the process when nobody is left or the
 * deadline passed.
 */
#include "drain.h"
#include "client.h"
#include "listener.h"
#include "server.h"

#define DRAIN_SQLSTATE "57P01"	/* admin_shutdown */
#define DRAIN_MESSAGE "terminating connection: pgmoat is shutting down (admin_shutdown)"
/* After the deadline, how long final ErrorResponses may take to flush. */
#define DRAIN_FLUSH_GRACE_USEC (2 * USEC_PER_SEC)

static usec_t drain_deadline;	/* 0: no limit (shutdown_timeout = 0) */
static bool drain_forced;	/* the deadline passed: everyone was closed */

void drain_start(void)
{
	if (moat->state == MOAT_DRAINING)
		return;
	usec_t timeout = moat->cfg->shutdown_timeout;
	drain_deadline = timeout > 0 ? util_now_mono() + timeout : 0;
	drain_forced = false;
	moat->state = MOAT_DRAINING;
	listener_close_all();
	log_info("draining: closing each client at its next transaction boundary%s",
		 timeout > 0 ? "" : " (no shutdown_timeout)");
}

bool drain_active(void)
{
	return moat->state == MOAT_DRAINING;
}

bool drain_close_at_boundary(Client *c)
{
	if (moat->state != MOAT_DRAINING || c->state == CL_FREE || c->is_admin)
		return false;
	moat->stats.drain_closed_clients++;
	client_disconnect(c, DRAIN_SQLSTATE, DRAIN_MESSAGE);
	return true;
}

static bool client_at_boundary(const Client *c)
{
	const Server *s = c->link;
	return !s || (s->ready && s->tx_status == 'I' && !s->unsynced && c->fwd_remaining == 0);
}

/* Closed clients whose last message (the shutdown error) is still being written. */
static bool clients_flushing(Worker *w)
{
	List *item;
	list_for_each(item, &w->free_clients) {
		if (client_has_socket(container_of(item, Client, head)))
			return true;
	}
	return false;
}

static void drain_close_clients(Worker *w, bool force)
{
	List *item, *tmp;
	list_for_each_safe(item, &w->all_clients, tmp) {
		Client *c = container_of(item, Client, all_head);
		if (c->state == CL_FREE)
			continue;
		/* Waiting or logging in: nothing of theirs has started on a server. */
		if (!(force || c->state != CL_ACTIVE || client_at_boundary(c)))
			continue;
		moat->stats.drain_closed_clients++;
		client_disconnect(c, DRAIN_SQLSTATE, force ? DRAIN_MESSAGE " (shutdown_timeout)"
								   : DRAIN_MESSAGE);
	}
}

static void drain_finish(Worker *w)
{
	List *item, *tmp;
	list_for_each_safe(item, &w->all_servers, tmp) {
		Server *s = container_of(item, Server, all_head);
		if (s->state != SV_FREE)
			server_disconnect(s, "shutting down");
	}
	log_info("drain complete, exiting");
	event_base_loopbreak(w->base);
}

void drain_tick(Worker *w, usec_t now)
{
	bool late = drain_deadline > 0 && now >= drain_deadline;
	if (late && !drain_forced) {
		log_warning("shutdown_timeout passed with %d client(s) left: closing them",
			    moat->client_count);
		drain_forced = true;
	}
	drain_close_clients(w, late);
	bool flushing = clients_flushing(w) && !(late && now >= drain_deadline + DRAIN_FLUSH_GRACE_USEC);
	if (moat->client_count > 0 || flushing)
		return;
	drain_finish(w);
}
