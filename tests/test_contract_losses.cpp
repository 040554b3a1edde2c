// The contract harness (tests/contract_checks.hpp) over the MSE and cross-entropy cases of tests/contract.hpp.
#define LOSSKIT_CONTRACT_GROUP "losses"
#define LOSSKIT_CONTRACT_GROUP_CASES LOSSKIT_CONTRACT_LOSSES_CE
#include "contract_checks.hpp"
