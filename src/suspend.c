/*
 * SUSPEND / RESUME. Reading is stopped at the InReader (msgio), whose
 * suspended flag overrides every other reason to read, so no data path can
 * switch reading back on while the pooler is suspended. Admin console
 * clients keep reading: RESUME has to come from one of them.
 */
#include "suspend.h"
#include "client.h"
#include "server.h"
#include "listener.h"
#include "pool.h"

static bool client_suspendable(const Client *c)
{
	return c->state != CL_FREE && client_has_socket(c) && !c->is_admin;
}

static bool server_suspendable(const Server *s)
{
	return s->state != SV_FREE && s->bev;
}

void suspend_set(bool on)
{
	Worker *w = moat->worker;
	List *item;

	moat->state = on ? MOAT_SUSPENDED : MOAT_RUNNING;
	listener_pause(on);
	list_for_each(item, &w->all_clients) {
		Client *c = container_of(item, Client, all_head);
		if (client_suspendable(c))
			msgio_reader_suspend(&c->in, on);
	}
	list_for_each(item, &w->all_servers) {
		Server *s = container_of(item, Server, all_head);
		if (server_suspendable(s))
			msgio_reader_suspend(&s->in, on);
	}
	if (!on)
		pool_maintain_all();
}

bool suspend_buffers_flushed(void)
{
	Worker *w = moat->worker;
	List *item;

	list_for_each(item, &w->all_clients) {
		Client *c = container_of(item, Client, all_head);
		if (client_suspendable(c) && msgio_output_pending(&c->out) > 0)
			return false;
	}
	list_for_each(item, &w->all_servers) {
		Server *s = container_of(item, Server, all_head);
		if (server_suspendable(s) && msgio_output_pending(&s->out) > 0)
			return false;
	}
	return true;
}

void suspend_drop_unflushed(void)
{
	Worker *w = moat->worker;
	List *item, *tmp;

	list_for_each_safe(item, &w->all_clients, tmp) {
		Client *c = container_of(item, Client, all_head);
		if (client_suspendable(c) && msgio_output_pending(&c->out) > 0)
			client_disconnect(c, NULL, "SUSPEND: buffer not flushed within suspend_timeout");
	}
	list_for_each_safe(item, &w->all_servers, tmp) {
		Server *s = container_of(item, Server, all_head);
		if (server_suspendable(s) && msgio_output_pending(&s->out) > 0)
			server_disconnect(s, "SUSPEND: buffer not flushed within suspend_timeout");
	}
}
