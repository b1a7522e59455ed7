/* version.h — the project's version, recorded in every file it writes. */
#ifndef SL_VERSION_H
#define SL_VERSION_H
#define SL_VERSION "0.1.0"
#define SL_TOOL_NAME "zmq-splitlearn " SL_VERSION
#endif
