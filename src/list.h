/*
 * Intrusive doubly-linked lists, as in pgbouncer: a connection's state is the
 * list it sits on, so "how many servers are idle" is a list length.
 */
#ifndef PGMOAT_LIST_H
#define PGMOAT_LIST_H

#include <stddef.h>
#include <stdbool.h>

typedef struct List {
	struct List *next;
	struct List *prev;
} List;

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

static inline void list_init(List *l) { l->next = l->prev = l; }
static inline bool list_empty(const List *l) { return l->next == l; }

static inline void list_append(List *head, List *item)
{
	item->prev = head->prev;
	item->next = head;
	head->prev->next = item;
	head->prev = item;
}

/* At the front: inserting before the first element is appending to it. */
static inline void list_prepend(List *head, List *item) { list_append(head->next, item); }

static inline void list_del(List *item)
{
	item->prev->next = item->next;
	item->next->prev = item->prev;
	list_init(item);
}

static inline List *list_first(List *head) { return list_empty(head) ? NULL : head->next; }

static inline int list_count(const List *head)
{
	int n = 0;
	for (const List *i = head->next; i != head; i = i->next)
		n++;
	return n;
}

#define list_for_each(item, head) \
	for ((item) = (head)->next; (item) != (head); (item) = (item)->next)

/* Safe against deletion of the current item. */
#define list_for_each_safe(item, head, tmp) \
	for ((item) = (head)->next, (tmp) = (item)->next; (item) != (head); \
	     (item) = (tmp), (tmp) = (item)->next)

#endif
