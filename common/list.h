/* Intrusive circular doubly linked list with a sentinel, as used for pools, idle servers
 * and wait queues. A node whose prev is NULL is in no list. Allocates nothing. */
#ifndef PGS_LIST_H
#define PGS_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pgs_node {
    struct pgs_node *prev, *next;
} pgs_node;

typedef struct pgs_list {
    pgs_node head;
    size_t n;
} pgs_list;

#define pgs_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void pgs_list_init(pgs_list *l)
{
    l->head.prev = l->head.next = &l->head;
    l->n = 0;
}
static inline bool pgs_list_empty(const pgs_list *l)
{
    return l->n == 0;
}
static inline bool pgs_node_linked(const pgs_node *n)
{
    return n->prev != NULL;
}

static inline void pgs_list_insert_after(pgs_list *l, pgs_node *at, pgs_node *n)
{
    n->prev = at;
    n->next = at->next;
    at->next->prev = n;
    at->next = n;
    l->n++;
}
static inline void pgs_list_push_front(pgs_list *l, pgs_node *n)
{
    pgs_list_insert_after(l, &l->head, n);
}
static inline void pgs_list_push_back(pgs_list *l, pgs_node *n)
{
    pgs_list_insert_after(l, l->head.prev, n);
}

static inline void pgs_list_remove(pgs_list *l, pgs_node *n)
{
    if (!n->prev)
        return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
    l->n--;
}
static inline pgs_node *pgs_list_first(const pgs_list *l)
{
    return l->n ? l->head.next : NULL;
}
static inline pgs_node *pgs_list_last(const pgs_list *l)
{
    return l->n ? l->head.prev : NULL;
}
static inline pgs_node *pgs_list_pop_front(pgs_list *l)
{
    pgs_node *n = pgs_list_first(l);
    if (n)
        pgs_list_remove(l, n);
    return n;
}

/* Iterates safely against removal of the current node. */
#define pgs_list_each(l, it, tmp)                                                                            \
    for ((it) = (l)->head.next, (tmp) = (it)->next; (it) != &(l)->head; (it) = (tmp), (tmp) = (it)->next)

#endif
