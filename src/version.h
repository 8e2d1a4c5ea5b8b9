/*
 * version.h — how the broker names itself to the servers it calls.
 *
 * BROKER_VERSION comes from the Makefile. One User-Agent for every outgoing
 * request (Courier calls in courier.c, JWKS fetches in jwks.c), so a server's
 * log shows the same name whichever part of the broker called it.
 */
#ifndef BROKER_VERSION_H
#define BROKER_VERSION_H

#define BROKER_USER_AGENT "courier-broker/" BROKER_VERSION

#endif
