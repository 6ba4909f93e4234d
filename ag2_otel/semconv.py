"""Every attribute key, span name and operation string this project emits or reads, in one place.

OTel's own Python constants (``opentelemetry.semconv._incubating``) are marked deprecated after the GenAI
conventions moved to their own repository and lack the newer keys, so we keep plain strings here.
Keys under ``ag2.`` are ours, for AG2 concepts the conventions do not cover; each is documented in the README.
"""

# --- operations (gen_ai.operation.name) -------------------------------------------------------------------------
OP_WORKFLOW = "invoke_workflow"
OP_AGENT = "invoke_agent"
OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"
OP_GENERATE_CONTENT = "generate_content"
OP_TOOL = "execute_tool"
OP_CREATE_AGENT = "create_agent"
OP_EMBEDDINGS = "embeddings"
OP_RETRIEVAL = "retrieval"

# --- GenAI attributes -------------------------------------------------------------------------------------------
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
SYSTEM_DEPRECATED = "gen_ai.system"  # read only, from older producers

WORKFLOW_NAME = "gen_ai.workflow.name"
CONVERSATION_ID = "gen_ai.conversation.id"

AGENT_ID = "gen_ai.agent.id"
AGENT_NAME = "gen_ai.agent.name"
AGENT_DESCRIPTION = "gen_ai.agent.description"

REQUEST_MODEL = "gen_ai.request.model"
REQUEST_PREFIX = "gen_ai.request."
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"

USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
USAGE_PROMPT_TOKENS_DEPRECATED = "gen_ai.usage.prompt_tokens"  # read only
USAGE_COMPLETION_TOKENS_DEPRECATED = "gen_ai.usage.completion_tokens"  # read only

TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_DESCRIPTION = "gen_ai.tool.description"
TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_CALL_RESULT = "gen_ai.tool.call.result"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"

TRANSFER_MODE = "gen_ai.transfer.mode"  # return_to_caller | pass_control
TRANSFER_TARGET_NAME = "gen_ai.transfer.target.name"

INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"

ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

# --- metrics ----------------------------------------------------------------------------------------------------
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
TOKEN_TYPE = "gen_ai.token.type"  # input | output

# --- ag2.* : AG2 concepts with no GenAI convention ----------------------------------------------------------------
AG2_SPAN_TYPE = "ag2.span.type"  # also emitted by AG2's own autogen.opentelemetry; we read theirs too
AG2_ENTRY_POINT = "ag2.entry_point"  # initiate_chat | a_initiate_chat | run | run_group_chat | group_chat | ...
AG2_PARTICIPANTS = "ag2.workflow.participants"  # list of agent names
AG2_MAX_TURNS = "ag2.workflow.max_turns"
AG2_MAX_ROUNDS = "ag2.workflow.max_rounds"
AG2_TURNS = "ag2.workflow.turns"  # messages exchanged in this conversation
AG2_SUMMARY = "ag2.workflow.summary"  # content capture only
AG2_TERMINATION_REASON = "ag2.workflow.termination_reason"
AG2_SENDER = "ag2.message.sender"  # who sent the message an agent is replying to
AG2_COST = "ag2.usage.cost"  # USD as computed by AG2's client
AG2_CACHE_HIT = "ag2.cache.hit"
AG2_INPUT_MESSAGES_TOTAL = "ag2.input.messages.total"  # history length; we record only a bounded tail
AG2_INPUT_MESSAGES_OMITTED = "ag2.input.messages.omitted"
AG2_SPEAKER_METHOD = "ag2.speaker_selection.method"  # auto | round_robin | random | manual | callable
AG2_SPEAKER_SELECTED = "ag2.speaker_selection.selected"
AG2_SPEAKER_CANDIDATES = "ag2.speaker_selection.candidates"
AG2_CODE_LANGUAGE = "ag2.code.language"
AG2_CODE_BLOCKS = "ag2.code.blocks"  # content capture only (JSON)
AG2_CODE_EXIT_CODE = "ag2.code.exit_code"
AG2_CODE_OUTPUT = "ag2.code.output"  # content capture only
AG2_HUMAN_PROMPT = "ag2.human_input.prompt"  # content capture only
AG2_HUMAN_REPLY = "ag2.human_input.reply"  # content capture only
AG2_TOOL_SUCCESS = "ag2.tool.success"
AG2_TOOL_RESULT_ENCODING = "ag2.tool.call.result.encoding"  # "json": the result was structured, recorded as JSON
AG2_OUTCOME = "ag2.outcome"  # an exception AG2 raises as control flow (e.g. no_eligible_speaker): not an error

# ag2.span.type values (the same words AG2's own module uses, so both producers read alike)
SPAN_TYPE_CONVERSATION = "conversation"
SPAN_TYPE_MULTI_CONVERSATION = "multi_conversation"
SPAN_TYPE_AGENT = "agent"
SPAN_TYPE_LLM = "llm"
SPAN_TYPE_TOOL = "tool"
SPAN_TYPE_HANDOFF = "handoff"
SPAN_TYPE_SPEAKER_SELECTION = "speaker_selection"
SPAN_TYPE_HUMAN_INPUT = "human_input"
SPAN_TYPE_CODE_EXECUTION = "code_execution"

# --- span names -------------------------------------------------------------------------------------------------
def span_name(operation: str, subject: str | None) -> str:
    """``{operation} {subject}`` as the conventions name spans, or the bare operation when no subject is known."""
    return f"{operation} {subject}" if subject else operation


SPEAKER_SELECTION_SPAN = "speaker_selection"
HUMAN_INPUT_SPAN = "await_human_input"
CODE_EXECUTION_SPAN = "execute_code"

# --- read only: what AG2's own ``autogen.opentelemetry`` emits where it differs from the conventions ---------------
AG2_NATIVE_COST = "gen_ai.usage.cost"  # AG2's module puts the cost here (we emit ag2.usage.cost)
AG2_NATIVE_OP_CONVERSATION = "conversation"  # initiate_chat / run_chat / resume (a workflow)
AG2_NATIVE_OP_INITIATE_CHATS = "initiate_chats"  # sequential / parallel chats (a workflow of workflows)
AG2_NATIVE_OP_SPEAKER_SELECTION = "speaker_selection"
AG2_NATIVE_OP_EXECUTE_CODE = "execute_code"
AG2_NATIVE_OP_HUMAN_INPUT = "await_human_input"
