/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/list: intrusive circular doubly linked lists. */
#ifndef RINGPROT_UR_LIST_H
#define RINGPROT_UR_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct ur_list {
	struct ur_list *next, *prev;
};

#define ur_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline void ur_list_init(struct ur_list *l)
{
	l->next = l;
	l->prev = l;
}

static inline bool ur_list_empty(const struct ur_list *l)
{
	return l->next == l;
}

/* Is the node on some list? (Nodes are re-initialised when removed.) */
static inline bool ur_list_linked(const struct ur_list *n)
{
	return n->next != NULL && n->next != n;
}

static inline void ur_list_add_tail(struct ur_list *head, struct ur_list *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static inline void ur_list_del(struct ur_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	ur_list_init(n);
}

static inline struct ur_list *ur_list_pop(struct ur_list *head)
{
	struct ur_list *n = head->next;

	if (n == head)
		return NULL;
	ur_list_del(n);
	return n;
}

#define ur_list_for_each(pos, head) \
	for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
#define ur_list_for_each_safe(pos, tmp, head)                            \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); \
	     (pos) = (tmp), (tmp) = (pos)->next)

#endif /* RINGPROT_UR_LIST_H */
