#!/usr/bin/env bash
# Creates drover's broker users, one per role, with permissions that let each send only what
# its role sends (see docs/security.md):
#
#   controller  declares everything, consumes services and events, publishes jobs and control
#   agent       consumes its job queues and its own control queue, publishes events and dead letters
#   submitter   publishes submissions (and aborts) to <ns>.submit, nothing else
#
# Run it on a broker node as a user allowed to run rabbitmqctl, once per namespace, and again
# whenever agents serve a new queue. Passwords come from the environment, never from arguments:
#
#   DROVER_CONTROLLER_PASSWORD=... DROVER_AGENT_PASSWORD=... DROVER_SUBMIT_PASSWORD=... \
#     deploy/rabbitmq-users.sh --vhost /drover --queues default,gpu
#
# A user whose password variable is unset must exist already; its permissions are set anyway.
# --print shows the permissions without changing anything.
set -euo pipefail

ns=drover
vhost=/
queues=default
node=
print=0
controller_user=drover-controller
agent_user=drover-agent
submit_user=drover-submit

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF

options:
  --namespace NS        drover's namespace (default: drover)
  --vhost VHOST         the vhost drover uses, created when missing (default: /)
  --queues A,B,...      the job queues agents serve (default: default; drivers is always added)
  --node NODE           the broker node, passed to rabbitmqctl -n
  --controller-user U   (default: drover-controller)
  --agent-user U        (default: drover-agent)
  --submit-user U       (default: drover-submit)
  --print               print the permissions only
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) ns=$2; shift 2 ;;
    --vhost) vhost=$2; shift 2 ;;
    --queues) queues=$2; shift 2 ;;
    --node) node=$2; shift 2 ;;
    --controller-user) controller_user=$2; shift 2 ;;
    --agent-user) agent_user=$2; shift 2 ;;
    --submit-user) submit_user=$2; shift 2 ;;
    --print) print=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "rabbitmq-users.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

name_ok() { [[ $1 =~ ^[A-Za-z0-9_.-]+$ ]]; }
name_ok "$ns" || { echo "rabbitmq-users.sh: bad --namespace '$ns': use letters, digits, '_', '.', '-'" >&2; exit 2; }

# A name as a regex: the dots escaped.
re() { printf '%s' "$1" | sed 's/[.]/\\./g'; }
# The broker queue of a user queue: unprefixed in the default namespace, as drover names them.
broker_queue() { if [ "$ns" = drover ]; then printf '%s' "$1"; else printf '%s.%s' "$ns" "$1"; fi; }

n=$(re "$ns")
job_queues=
IFS=',' read -r -a queue_list <<< "$queues"
for q in "${queue_list[@]}"; do
  name_ok "$q" || { echo "rabbitmq-users.sh: bad queue name '$q' in --queues" >&2; exit 2; }
  [ "$q" = services ] && { echo "rabbitmq-users.sh: 'services' is the controller's queue, not a job queue" >&2; exit 2; }
  job_queues="$job_queues|$(re "$(broker_queue "$q")")"
done
# Decorator pipelines' drivers run from the reserved `drivers` queue, which agents serve too.
case ",$queues," in *,drivers,*) ;; *) job_queues="$job_queues|$(re "$(broker_queue drivers)")" ;; esac

# The controller owns the namespace: in the default namespace user queues have no prefix, so
# it gets the whole vhost (give drover a vhost of its own); in another namespace, its prefix.
# Its queues dead-letter through the default exchange, which RabbitMQ counts as a write to
# amq.default by whoever declares them.
if [ "$ns" = drover ]; then
  controller_re='.*'
  controller_write='.*'
else
  controller_re="^$n\\..*\$"
  controller_write="^($n\\..*|amq\\.default)\$"
fi
# Agents: declare and bind their own control queue; write events and dead letters; read their
# job queues, their control queue and the control exchange (to bind to it).
agent_configure="^$n\\.agent\\..*\$"
agent_write="^($n\\.events|$n\\.dead|$n\\.agent\\..*)\$"
agent_read="^($n\\.control|$n\\.agent\\..*$job_queues)\$"
# Submitters: the submit exchange only.
submit_configure='^$'
submit_write="^$n\\.submit\$"
submit_read='^$'

if [ "$print" = 1 ]; then
  printf 'vhost %s, namespace %s\n' "$vhost" "$ns"
  printf '%-12s configure %-28s write %-44s read %s\n' \
    controller "$controller_re" "$controller_write" "$controller_re" \
    agent "$agent_configure" "$agent_write" "$agent_read" \
    submitter "$submit_configure" "$submit_write" "$submit_read"
  exit 0
fi

ctl() {
  if [ -n "$node" ]; then rabbitmqctl -q -n "$node" "$@"; else rabbitmqctl -q "$@"; fi
}

if ! ctl list_vhosts name | grep -qxF -- "$vhost"; then
  ctl add_vhost "$vhost"
fi

existing=$(ctl list_users --no-table-headers | cut -f1)

ensure_user() { # user, name of the password variable
  local user=$1 var=$2
  local password=${!var:-}
  if grep -qxF -- "$user" <<< "$existing"; then
    if [ -n "$password" ]; then
      printf '%s\n' "$password" | ctl change_password "$user" >/dev/null
    fi
  elif [ -n "$password" ]; then
    printf '%s\n' "$password" | ctl add_user "$user" >/dev/null
  else
    echo "rabbitmq-users.sh: user $user does not exist; set $var to create it" >&2
    exit 1
  fi
}

ensure_user "$controller_user" DROVER_CONTROLLER_PASSWORD
ensure_user "$agent_user" DROVER_AGENT_PASSWORD
ensure_user "$submit_user" DROVER_SUBMIT_PASSWORD

ctl set_permissions -p "$vhost" "$controller_user" "$controller_re" "$controller_write" "$controller_re"
ctl set_permissions -p "$vhost" "$agent_user" "$agent_configure" "$agent_write" "$agent_read"
ctl set_permissions -p "$vhost" "$submit_user" "$submit_configure" "$submit_write" "$submit_read"
echo "rabbitmq-users.sh: $controller_user, $agent_user and $submit_user set up on vhost $vhost for namespace $ns (job queues: $queues)"
