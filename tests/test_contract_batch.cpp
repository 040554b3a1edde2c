// The contract harness (tests/contract_checks.hpp) over the batch cases of tests/contract.hpp.
#define LOSSKIT_CONTRACT_GROUP "batch"
#define LOSSKIT_CONTRACT_GROUP_CASES LOSSKIT_CONTRACT_BATCH
#include "contract_checks.hpp"
